//! From the config to what each part takes: the registry's entries, the overlay's, the etcd
//! backend's and the Docker source's specs. The parts know nothing of the config's types; the
//! defaults that depend on other sections (a container's network and node) are filled here.

use super::{Config, ContainerConfig, Offload};
use crate::overlay::{NetworkSpec, OverlaySpec, TapNetwork};
use crate::registry::docker::{DockerEndpoint, DockerSpec, Error as DockerError, Settings};
use crate::registry::{Container, EtcdSpec, Health, Origin, Registry, RegistryError};

impl Config {
    /// The registry entry for a config (or admin API) entry, with the defaults that depend
    /// on the rest of the config: the first overlay network, this node.
    pub fn container(&self, c: &ContainerConfig, origin: Origin) -> Container {
        Container {
            name: c.name.clone(),
            ip: c.ip,
            mac: c.mac,
            port: c.port,
            labels: c.labels.clone(),
            network: c
                .network
                .clone()
                .unwrap_or_else(|| self.default_network().to_owned()),
            node: c.node.clone().unwrap_or_else(|| self.node.name.clone()),
            health: Health::Unknown,
            ready: true,
            origin,
        }
    }

    /// The config's `[[containers]]` as registry entries.
    pub fn containers(&self) -> Vec<Container> {
        self.containers
            .iter()
            .map(|c| self.container(c, Origin::Config))
            .collect()
    }

    /// A registry holding the config's containers.
    pub fn registry(&self) -> Result<Registry, RegistryError> {
        let r = Registry::new(self.service_label());
        r.set_backend_networks(
            self.ingress
                .as_ref()
                .map(|i| i.backend_networks.clone())
                .unwrap_or_default(),
        );
        r.replace_origin(Origin::Config, self.containers())?;
        Ok(r)
    }

    /// `[overlay]`, as the overlay takes it.
    pub fn overlay_spec(&self) -> Option<OverlaySpec> {
        let o = self.overlay.as_ref()?;
        let encryption = o.wireguard().and_then(|e| {
            Some(crate::overlay::EncryptionSpec {
                listen: e.listen?,
                address: e.address?,
                key_file: self.wireguard_key_file(),
                allow_plaintext: e.allow_plaintext,
                peers: e
                    .peers
                    .iter()
                    .filter_map(|p| {
                        Some(crate::overlay::wg::PeerSpec {
                            public_key: crate::overlay::wg::parse_key(&p.public_key)?,
                            endpoint: p.endpoint,
                            address: p.address,
                        })
                    })
                    .collect(),
            })
        });
        // with encryption, the peers' tunnel addresses join these VTEPs (overlay::membership)
        let peers = o.peers.clone();
        Some(OverlaySpec {
            encryption,
            listen: o.listen,
            advertise: o.advertise,
            peers,
            peer_nodes: o.peer_nodes.clone(),
            peer_gateways: o.peer_gateways.clone(),
            fdb_aging: o.fdb_aging,
            offload: o.offload == Offload::Auto,
            offloads_off: Default::default(),
            source_check: o.source_check.map(|s| s == super::SourceCheck::On),
            isolated_networks: o
                .networks
                .iter()
                .any(|n| n.policy == super::NetworkPolicy::Isolated),
            networks: o
                .networks
                .iter()
                .map(|n| TapNetwork {
                    spec: NetworkSpec {
                        name: n.name.clone(),
                        vni: n.vni,
                        mtu: n.mtu,
                    },
                    tap: n.tap.clone(),
                    bridge: n.bridge.clone(),
                })
                .collect(),
        })
    }

    /// What the policy part needs: this node, the isolated networks, the TAPs whose bridges
    /// hold this node's gateway addresses.
    pub fn policy_spec(&self) -> crate::policy::PolicySpec {
        let networks = self.overlay.iter().flat_map(|o| o.networks.iter());
        crate::policy::PolicySpec {
            node: self.node.name.clone(),
            isolated: networks
                .clone()
                .filter(|n| n.policy == super::NetworkPolicy::Isolated)
                .map(|n| n.name.clone())
                .collect(),
            taps: networks.map(|n| n.tap.clone()).collect(),
            peer_gateways: self
                .overlay
                .iter()
                .flat_map(|o| o.peer_gateways.values().flatten().copied())
                .collect(),
        }
    }

    /// `[registry]` for the etcd backend.
    pub fn etcd_spec(&self) -> EtcdSpec {
        EtcdSpec {
            endpoints: self.registry.endpoints.clone(),
            lease_ttl: self.registry.lease_ttl,
            prefix: self.registry.prefix.clone(),
            auth: self.etcd_auth(),
        }
    }

    /// How nodes authenticate to etcd (the registry and ACME's fleet alike).
    pub fn etcd_auth(&self) -> crate::registry::EtcdAuth {
        let r = &self.registry;
        let tls = r.tls.as_ref();
        crate::registry::EtcdAuth {
            tls: tls.is_some() || r.endpoints.iter().any(|e| e.starts_with("https://")),
            ca_file: tls.and_then(|t| t.ca_file.clone()),
            identity: tls.and_then(|t| t.cert_file.clone().zip(t.key_file.clone())),
            user: r.username.clone().zip(r.password_file.clone()),
        }
    }

    /// `[docker]`, as the Docker source takes it; `docker_host` is `DOCKER_HOST`, used when
    /// `docker.endpoint` is absent. `None` without a `[docker]` section; an error names the
    /// endpoint that does not parse and where it came from.
    pub fn docker_spec(
        &self,
        docker_host: Option<&str>,
    ) -> Option<Result<DockerSpec, DockerError>> {
        let d = self.docker.as_ref()?;
        let text = d.endpoint_text(docker_host);
        let endpoint = match DockerEndpoint::parse(&text) {
            Ok(e) => e,
            Err(e) if d.endpoint.is_none() => return Some(Err(DockerError::DockerHost(e))),
            Err(e) => return Some(Err(DockerError::Endpoint(e))),
        };
        Some(Ok(DockerSpec {
            endpoint,
            settings: Settings {
                network: d.network.clone(),
                node: self.node.name.clone(),
                overlay_network: self.default_network().to_owned(),
                service_label: self.service_label().to_owned(),
            },
        }))
    }
}
