//! Whole-config validation: paths, containers, registry, admin, and the sections in order
//! (sections.rs); every problem is collected with its key path.

use super::*;

impl Config {
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(t) = self.admin.token_file.as_mut() {
            fix(t);
        }
        if let Some(t) = self.registry.tls.as_mut() {
            for p in [&mut t.ca_file, &mut t.cert_file, &mut t.key_file]
                .into_iter()
                .flatten()
            {
                fix(p);
            }
        }
        if let Some(p) = self.registry.password_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self
            .overlay
            .as_mut()
            .and_then(|o| o.encryption.as_mut())
            .and_then(|e| e.private_key_file.as_mut())
        {
            fix(p);
        }
        if let Some(ingress) = self.ingress.as_mut() {
            for c in &mut ingress.certs {
                fix(&mut c.cert);
                fix(&mut c.key);
            }
            if let Some(ca) = ingress.acme.as_mut().and_then(|a| a.ca_file.as_mut()) {
                fix(ca);
            }
            if let Some(ca) = ingress.backend_ca_file.as_mut() {
                fix(ca);
            }
            if let Some(AccessLogConfig::File(p)) = ingress.access_log.as_mut()
                && !p.as_os_str().is_empty()
            {
                fix(p);
            }
        }
    }

    /// The label that names a container's service (`dns.service_label`, default "app").
    pub fn service_label(&self) -> &str {
        self.dns
            .as_ref()
            .map(|d| d.service_label.as_str())
            .unwrap_or("app")
    }

    /// The zone the ingress routes (`ingress.zone`, else `dns.zone`), lower-cased.
    pub fn ingress_zone(&self) -> Option<String> {
        let i = self.ingress.as_ref()?;
        i.zone
            .as_deref()
            .or(self.dns.as_ref().map(|d| d.zone.as_str()))
            .and_then(|z| vxgate_dns::name::parse_zone(z).ok())
    }

    /// The overlay network a container belongs to when it names none.
    pub fn default_network(&self) -> &str {
        self.overlay
            .as_ref()
            .and_then(|o| o.networks.first())
            .map(|n| n.name.as_str())
            .unwrap_or("default")
    }

    /// Semantic checks that serde's types cannot express. Returns every problem found.
    pub fn validate(&self) -> Vec<Problem> {
        let mut v = Validator::default();
        self.validate_node(&mut v);
        self.validate_admin(&mut v);
        self.validate_registry(&mut v);
        if let Some(o) = &self.overlay {
            validate_overlay(o, &mut v);
        }
        self.validate_encryption(&mut v);
        if let Some(d) = &self.dns {
            validate_dns(d, &mut v);
        }
        if let Some(i) = &self.ingress {
            validate_ingress(i, &mut v);
            match (&i.zone, &self.dns) {
                (Some(z), _) => {
                    if let Err(e) = vxgate_dns::name::parse_zone(z) {
                        v.bad(
                            "ingress.zone",
                            format!("{z:?}: {e}; expected a domain like \"example.com\""),
                        );
                    }
                }
                (None, None) => v.bad(
                    "ingress",
                    "the ingress routes <service>.<zone>: set ingress.zone or dns.zone".into(),
                ),
                (None, Some(_)) => {}
            }
        }
        self.validate_containers(&mut v);
        if let Some(d) = &self.docker {
            validate_docker(d, &mut v);
        }
        v.problems
    }

    pub(super) fn validate_node(&self, v: &mut Validator) {
        if let Err(e) = vxgate_dns::name::check_label(&self.node.name) {
            v.bad(
                "node.name",
                format!("{e}; expected a host-name label like \"h1\""),
            );
        }
    }

    pub(super) fn validate_admin(&self, v: &mut Validator) {
        let a = &self.admin;
        if a.listen.port() == 0 {
            v.bad(
                "admin.listen",
                format!(
                    "{}: port 0 picks a random port no client knows; expected e.g. 9180",
                    a.listen
                ),
            );
        }
        match &a.token_file {
            None if !a.listen.ip().is_loopback() => v.bad(
                "admin.listen",
                format!(
                    "{} is not a loopback address, so admin.token_file is required",
                    a.listen
                ),
            ),
            Some(path) => match std::fs::read_to_string(path) {
                Err(e) => v.bad(
                    "admin.token_file",
                    format!("cannot read {}: {e}", path.display()),
                ),
                // an empty token would lock every client out of the admin API
                Ok(t) if t.trim().is_empty() => v.bad(
                    "admin.token_file",
                    format!(
                        "{} is empty; expected a bearer token (e.g. openssl rand -hex 32)",
                        path.display()
                    ),
                ),
                Ok(_) => {}
            },
            None => {}
        }
    }

    pub(super) fn validate_registry(&self, v: &mut Validator) {
        let r = &self.registry;
        match r.backend {
            RegistryBackend::Static => {
                if !r.endpoints.is_empty() {
                    v.bad(
                        "registry.endpoints",
                        "only used with backend = \"etcd\"; remove it or set the backend".into(),
                    );
                }
            }
            RegistryBackend::Etcd => {
                if !cfg!(feature = "etcd") {
                    v.bad(
                        "registry.backend",
                        "this vxgate was built without the \"etcd\" feature; rebuild with the default features".into(),
                    );
                }
                if !r.prefix.starts_with('/') || r.prefix.contains(char::is_whitespace) {
                    v.bad(
                        "registry.prefix",
                        format!("{:?}: expected a key prefix like \"/vxgate/\"", r.prefix),
                    );
                }
                if let Some(o) = &self.overlay {
                    if let Some(vtep) = o.advertise.or(o.listen)
                        && vtep.ip().is_unspecified()
                    {
                        v.bad(
                            "overlay.advertise",
                            format!("overlay.listen is {vtep}; other nodes need this node's VTEP address, like \"10.99.0.1:4789\""),
                        );
                    }
                }
                if r.endpoints.is_empty() {
                    v.bad(
                        "registry.endpoints",
                        "backend \"etcd\" needs at least one endpoint, like \"http://127.0.0.1:2379\"".into(),
                    );
                }
                for (i, e) in r.endpoints.iter().enumerate() {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        v.bad(
                            &format!("registry.endpoints[{i}]"),
                            format!("{e:?} is not a URL; expected \"http://HOST:PORT\""),
                        );
                    } else if r.tls.is_some() && e.starts_with("http://") {
                        v.bad(
                            &format!("registry.endpoints[{i}]"),
                            format!("{e:?} is plain HTTP while registry.tls is set: every endpoint must be https:// (or remove registry.tls)"),
                        );
                    }
                }
                self.validate_etcd_auth(v);
            }
        }
        in_range(
            v,
            "registry.lease_ttl_s",
            u128::from(r.lease_ttl.as_secs()),
            2,
            3600,
            "the lease is renewed at a third of it; a dead node's entries live this long",
        );
    }

    /// `registry.tls`, `registry.username` and `registry.password_file`.
    fn validate_etcd_auth(&self, v: &mut Validator) {
        let r = &self.registry;
        if let Some(t) = &r.tls {
            if let Some(ca) = &t.ca_file {
                pem_file(v, "registry.tls.ca_file", ca, "CERTIFICATE");
            }
            match (&t.cert_file, &t.key_file) {
                (Some(c), Some(k)) => {
                    pem_file(v, "registry.tls.cert_file", c, "CERTIFICATE");
                    pem_file(v, "registry.tls.key_file", k, "PRIVATE KEY");
                    secret_file(v, "registry.tls.key_file", k);
                }
                (None, None) => {}
                (Some(_), None) => v.bad(
                    "registry.tls.key_file",
                    "cert_file needs its key_file (the client certificate's private key)".into(),
                ),
                (None, Some(_)) => v.bad(
                    "registry.tls.cert_file",
                    "key_file needs its cert_file (the client certificate)".into(),
                ),
            }
        }
        match (&r.username, &r.password_file) {
            (Some(u), Some(p)) => {
                if u.is_empty() {
                    v.bad("registry.username", "is empty".into());
                }
                match std::fs::read_to_string(p) {
                    Err(e) => v.bad(
                        "registry.password_file",
                        format!("cannot read {}: {e}", p.display()),
                    ),
                    Ok(t) if t.trim_end_matches(['\n', '\r']).is_empty() => v.bad(
                        "registry.password_file",
                        format!("{} is empty", p.display()),
                    ),
                    Ok(_) => secret_file(v, "registry.password_file", p),
                }
            }
            (None, None) => {}
            (Some(_), None) => v.bad(
                "registry.password_file",
                "registry.username needs a password_file".into(),
            ),
            (None, Some(_)) => v.bad(
                "registry.username",
                "registry.password_file needs a username".into(),
            ),
        }
    }

    pub(super) fn validate_containers(&self, v: &mut Validator) {
        let label = self.service_label();
        let networks: Vec<&str> = self
            .overlay
            .as_ref()
            .map(|o| o.networks.iter().map(|n| n.name.as_str()).collect())
            .unwrap_or_default();
        let mut names = HashSet::new();
        let mut ips = HashMap::new();
        let mut macs = HashMap::new();
        for (i, c) in self.containers.iter().enumerate() {
            let at = |k: &str| format!("containers[{i}].{k}");
            if let Err(e) = vxgate_dns::name::check_label(&c.name) {
                v.bad(
                    &at("name"),
                    format!("{e}; expected a host-name label like \"web-1\""),
                );
            } else if !names.insert(c.name.to_ascii_lowercase()) {
                v.bad(
                    &at("name"),
                    format!("duplicate container name {:?}", c.name),
                );
            }
            if c.ip.is_unspecified() || c.ip.is_multicast() {
                v.bad(&at("ip"), format!("{} is not a unicast address", c.ip));
            } else if let Some(other) = ips.insert(c.ip, i) {
                v.bad(
                    &at("ip"),
                    format!("{} is already used by containers[{other}]", c.ip),
                );
            }
            if c.port == 0 {
                v.bad(&at("port"), "port 0 is not a port; expected 1-65535".into());
            }
            if let Some(mac) = c.mac {
                if !mac.is_unicast() {
                    v.bad(&at("mac"), format!("{mac} is not a unicast MAC address"));
                } else if let Some(other) = macs.insert(mac, i) {
                    v.bad(
                        &at("mac"),
                        format!("{mac} is already used by containers[{other}]"),
                    );
                }
            }
            if let Some(service) = c.labels.get(label)
                && let Err(e) = vxgate_dns::name::check_label(service)
            {
                v.bad(
                    &format!("containers[{i}].labels.{label}"),
                    format!("{e}; the service name becomes a DNS label"),
                );
            }
            if let Some(value) = c.labels.get(crate::policy::ALLOW_LABEL)
                && let Err(e) = crate::policy::parse_allow(value)
            {
                v.bad(
                    &format!("containers[{i}].labels.\"{}\"", crate::policy::ALLOW_LABEL),
                    format!("{e}; expected service names, \"ingress\" or \"*\", each with an optional :port"),
                );
            }
            if let Some(net) = &c.network
                && !networks.contains(&net.as_str())
            {
                v.bad(
                    &at("network"),
                    format!(
                        "no overlay network named {net:?}; expected one of {:?}",
                        networks
                    ),
                );
            }
            if let Some(node) = &c.node
                && let Err(e) = vxgate_dns::name::check_label(node)
            {
                v.bad(
                    &at("node"),
                    format!("{e}; expected a node name like \"h2\""),
                );
            }
        }
    }
}

#[derive(Default)]
pub(super) struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    pub(super) fn bad(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message,
        });
    }
}

/// A file holding a secret must not be readable by every user of the host.
fn secret_file(v: &mut Validator, key: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o004 != 0
    {
        v.bad(
            key,
            format!(
                "{} is readable by every user (mode {:o}); chmod o-r it",
                path.display(),
                m.permissions().mode() & 0o777
            ),
        );
    }
}

impl Config {
    /// This host's WireGuard private key file: `overlay.encryption.private_key_file`, else
    /// `<state_dir>/wireguard.key`.
    pub fn wireguard_key_file(&self) -> PathBuf {
        self.overlay
            .as_ref()
            .and_then(|o| o.encryption.as_ref())
            .and_then(|e| e.private_key_file.clone())
            .unwrap_or_else(|| self.node.state_dir.join("wireguard.key"))
    }

    /// `[overlay.encryption]`: keys, addresses and the key file.
    pub(super) fn validate_encryption(&self, v: &mut Validator) {
        let Some(o) = &self.overlay else { return };
        let Some(e) = o.wireguard() else { return };
        match e.listen {
            None => v.bad(
                "overlay.encryption.listen",
                "mode \"wireguard\" needs WireGuard's UDP address, like \"10.99.0.1:51820\"".into(),
            ),
            Some(l) if l.port() == 0 || Some(l) == o.listen => v.bad(
                "overlay.encryption.listen",
                format!(
                    "{l}: expected a port of its own, like 51820 (not 0, not overlay.listen's)"
                ),
            ),
            Some(l)
                if l.ip().is_unspecified()
                    && self.registry.backend == RegistryBackend::Etcd =>
            {
                v.bad(
                    "overlay.encryption.listen",
                    format!("{l}: other nodes find this host's WireGuard endpoint in its etcd record; give the underlay address, like \"10.99.0.1:51820\""),
                )
            }
            Some(_) => {}
        }
        let Some(me) = e.address else {
            v.bad(
                "overlay.encryption.address",
                "mode \"wireguard\" needs this host's tunnel address, like \"10.250.0.1\"".into(),
            );
            return;
        };
        if !o.peers.is_empty() && !e.allow_plaintext {
            v.bad(
                "overlay.peers",
                "plain VXLAN peers with encryption on need allow_plaintext = true (a migration window); list them under [[overlay.encryption.peers]]".into(),
            );
        }
        let mut addresses = HashMap::from([(me, "this host".to_owned())]);
        let mut keys = HashSet::new();
        for (i, p) in e.peers.iter().enumerate() {
            let at = |k: &str| format!("overlay.encryption.peers[{i}].{k}");
            match crate::crypto::parse_key(&p.public_key) {
                None => v.bad(
                    &at("public_key"),
                    format!("{:?}: expected 32 bytes of base64, as `wg pubkey` or `vxgate key show` print", p.public_key),
                ),
                Some(k) if !keys.insert(k) => {
                    v.bad(&at("public_key"), "the same key as another peer".into())
                }
                Some(_) => {}
            }
            if let Some(owner) = addresses.insert(p.address, format!("peers[{i}]")) {
                v.bad(
                    &at("address"),
                    format!(
                        "{} is already the tunnel address of {owner}; each host needs its own",
                        p.address
                    ),
                );
            }
        }
        let key = self.wireguard_key_file();
        if key.exists() {
            use std::os::unix::fs::PermissionsExt;
            match std::fs::read_to_string(&key) {
                Err(err) => v.bad(
                    "overlay.encryption.private_key_file",
                    format!("cannot read {}: {err}", key.display()),
                ),
                Ok(text) if crate::crypto::parse_key(&text).is_none() => v.bad(
                    "overlay.encryption.private_key_file",
                    format!(
                        "{} holds no key (expected 32 bytes of base64, as `wg genkey` writes)",
                        key.display()
                    ),
                ),
                Ok(_) => {
                    if let Ok(m) = std::fs::metadata(&key)
                        && m.permissions().mode() & 0o077 != 0
                    {
                        v.bad(
                            "overlay.encryption.private_key_file",
                            format!(
                                "{} is readable by others (mode {:o}); chmod 600 it",
                                key.display(),
                                m.permissions().mode() & 0o777
                            ),
                        );
                    }
                }
            }
        }
    }
}
