//! `vxgate init`: a starter config from what this host has — its name, its underlay address
//! (the one the default route leaves from), a Docker network and its bridge (when Docker
//! answers), etcd endpoints when given — with comments, checked by the config loader before
//! it is written, never over an existing file.

use crate::registry::docker::DockerEndpoint;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// What `vxgate init` was told.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The node's name (default: the host name).
    pub node: Option<String>,
    /// etcd endpoints: the registry is shared through them.
    pub etcd: Vec<String>,
    /// The Docker Engine to ask (default: DOCKER_HOST, else the CLI's socket).
    pub docker_endpoint: Option<String>,
    /// The Docker network to span (default: the only user-defined bridge network).
    pub docker_network: Option<String>,
    /// The DNS zone (default `example.com`, to be changed).
    pub zone: Option<String>,
}

/// What was found on the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub node: String,
    /// The address the default route leaves from, and its interface.
    pub underlay: Option<(Ipv4Addr, String)>,
    pub docker: Option<DockerNet>,
    /// Why Docker was not used, for a comment.
    pub docker_note: Option<String>,
}

/// A Docker bridge network vxgate can span.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerNet {
    pub endpoint: String,
    pub name: String,
    pub bridge: String,
    pub subnet: Option<String>,
    pub gateway: Option<IpAddr>,
    pub mtu: u32,
}

/// Why `init` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{0} exists: vxgate init never overwrites a config (write to another path, or move it away)"
    )]
    Exists(String),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
    #[error("the config made for this host does not pass check (a bug; please report):\n{0}")]
    Invalid(String),
}

/// Looks at the host (and Docker, for at most 3 s).
pub fn discover(opts: &Options) -> Found {
    let node = opts.node.clone().unwrap_or_else(hostname);
    let addrs = crate::policy::interface_addrs();
    let v4_of = |want: &dyn Fn(&str) -> bool| {
        addrs.iter().find_map(|(name, ip)| match ip {
            IpAddr::V4(v4) if want(name) && !v4.is_loopback() && !v4.is_link_local() => {
                Some((*v4, name.clone()))
            }
            _ => None,
        })
    };
    // the default route's interface; without one, the first that is not a bridge, a
    // bridge's port or a TAP/TUN (the container side)
    let underlay = default_route_interface()
        .and_then(|ifc| v4_of(&|n| n == ifc))
        .or_else(|| v4_of(&|n| !container_side(n)));
    let (docker, docker_note) = match docker_network(opts) {
        Ok(d) => (Some(d), None),
        Err(why) => (None, Some(why)),
    };
    Found {
        node,
        underlay,
        docker,
        docker_note,
    }
}

/// Whether an interface is on the containers' side: a bridge, a bridge's port, a TAP/TUN,
/// or loopback.
fn container_side(ifc: &str) -> bool {
    let sys = Path::new("/sys/class/net").join(ifc);
    ifc == "lo"
        || sys.join("bridge").exists()
        || sys.join("master").exists()
        || sys.join("tun_flags").exists()
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && !h.is_empty() => h.split('.').next().unwrap_or(h).to_owned(),
        _ => "node1".to_owned(),
    }
}

/// The interface of the IPv4 default route (`/proc/net/route`).
fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    default_route_in(&table)
}

fn default_route_in(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Iface Destination Gateway Flags ... Mask: destination 0 with mask 0, route up
        let up = f
            .get(3)
            .and_then(|x| u32::from_str_radix(x, 16).ok())
            .is_some_and(|x| x & 1 != 0);
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" && up).then(|| f[0].to_owned())
    })
}

/// The Docker network to span, or why there is none.
fn docker_network(opts: &Options) -> Result<DockerNet, String> {
    let text = opts
        .docker_endpoint
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| DockerEndpoint::DEFAULT.to_owned());
    let endpoint = DockerEndpoint::parse(&text).map_err(|e| e.to_string())?;
    let docker = crate::registry::docker::connect(&endpoint).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let networks = rt
        .block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(3),
                docker.list_networks(None),
            )
            .await
        })
        .map_err(|_| format!("Docker at {endpoint} did not answer within 3 s"))?
        .map_err(|e| format!("Docker at {endpoint}: {e}"))?;
    let candidates: Vec<_> = networks
        .into_iter()
        .filter(|n| n.driver.as_deref() == Some("bridge"))
        .filter(|n| match &opts.docker_network {
            Some(want) => n.name.as_deref() == Some(want.as_str()),
            None => n.name.as_deref() != Some("bridge"),
        })
        .collect();
    let n = match (candidates.as_slice(), &opts.docker_network) {
        ([one], _) => one,
        ([], Some(want)) => {
            return Err(format!(
                "Docker at {endpoint} has no bridge network {want:?}"
            ));
        }
        ([], None) => {
            return Err(format!(
                "Docker at {endpoint} has no network of its own yet (docker network create, below)"
            ));
        }
        (many, _) => {
            let names: Vec<_> = many.iter().filter_map(|n| n.name.clone()).collect();
            return Err(format!(
                "Docker at {endpoint} has several bridge networks ({}): name one with --docker-network",
                names.join(", ")
            ));
        }
    };
    let name = n.name.clone().unwrap_or_default();
    let options = n.options.clone().unwrap_or_default();
    let bridge = options
        .get("com.docker.network.bridge.name")
        .cloned()
        .unwrap_or_else(|| {
            let id = n.id.clone().unwrap_or_default();
            format!("br-{}", &id[..id.len().min(12)])
        });
    let ipam = n
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.subnet.as_deref().is_some_and(|s| !s.contains(':')))
        })
        .cloned();
    let gateway = ipam
        .as_ref()
        .and_then(|c| c.gateway.as_deref())
        .and_then(|g| g.parse().ok());
    let mtu = options
        .get("com.docker.network.driver.mtu")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1450);
    Ok(DockerNet {
        endpoint: endpoint.to_string(),
        name,
        bridge,
        subnet: ipam.and_then(|c| c.subnet),
        gateway,
        mtu,
    })
}

/// The config text for what was found.
pub fn render(found: &Found, opts: &Options) -> String {
    let mut s = String::new();
    let zone = opts.zone.as_deref().unwrap_or("example.com");
    let under = found
        .underlay
        .as_ref()
        .map(|(ip, _)| ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let _ = writeln!(
        s,
        "# vxgate config written by `vxgate init` ({}). `vxgate check --config FILE` validates it;\n# every key is in the README's Configuration section.\n",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        s,
        "[node]\nname = {:?}                         # unique in the fleet\nstate_dir = \"/var/lib/vxgate\"       # keys, certificates (0700)\n",
        found.node
    );
    s.push_str("[admin]\nlisten = \"127.0.0.1:9180\"            # REST API and /metrics; `vxgate ctl` talks to it\n\n");
    if opts.etcd.is_empty() {
        s.push_str("[registry]\nbackend = \"static\"                   # this host alone; for a fleet:\n# backend = \"etcd\"\n# endpoints = [\"http://10.0.0.1:2379\"]\n\n");
    } else {
        let eps: Vec<String> = opts.etcd.iter().map(|e| format!("{e:?}")).collect();
        let _ = writeln!(
            s,
            "[registry]\nbackend = \"etcd\"                     # every host of the fleet sees every service\nendpoints = [{}]\n",
            eps.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "[overlay]\nlisten = \"{under}:4789\"          # VXLAN on the underlay{}",
        found
            .underlay
            .as_ref()
            .map(|(_, ifc)| format!(" ({ifc})"))
            .unwrap_or_else(|| " (no default route found: set this host's address)".into())
    );
    if opts.etcd.is_empty() {
        s.push_str(
            "# peers = [\"10.0.0.2:4789\"]       # the other hosts' VTEPs (static fleets)\n",
        );
    }
    s.push_str("# [overlay.encryption]              # WireGuard between hosts (README: Encryption)\n# mode = \"wireguard\"\n\n");
    let mtu = found.docker.as_ref().map_or(1450, |d| d.mtu);
    let _ = writeln!(
        s,
        "[[overlay.networks]]\nname = \"default\"\nvni = 42\ntap = \"vxg0\"\nmtu = {mtu}"
    );
    match &found.docker {
        Some(d) => {
            let _ = writeln!(
                s,
                "bridge = {:?}                  # Docker's bridge of {:?}: the TAP joins it\n# policy = \"isolated\"              # closed unless vxgate.allow_from opens\n",
                d.bridge, d.name
            );
            let _ = writeln!(
                s,
                "[docker]\nendpoint = {:?}\nnetwork = {:?}                    # containers' addresses on this network\n",
                d.endpoint, d.name
            );
        }
        None => {
            let _ = writeln!(
                s,
                "# bridge = \"vxbr0\"                 # a Docker network's bridge: the TAP joins it\n\n# Docker: {}\n# docker network create --subnet 10.200.0.0/16 --ip-range 10.200.1.0/24 --gateway 10.200.1.1 \\\n#   --aux-address zero=10.200.1.0 -o com.docker.network.bridge.name=vxbr0 \\\n#   -o com.docker.network.driver.mtu=1450 vxnet\n# then run `vxgate init` again, or add:\n# [docker]\n# network = \"vxnet\"\n",
                found.docker_note.as_deref().unwrap_or("not found")
            );
        }
    }
    let (dns, recursion) = match found.docker.as_ref() {
        Some(DockerNet {
            gateway: Some(g),
            subnet,
            ..
        }) => (
            format!("{g}:53"),
            match subnet {
                Some(n) => format!("[{n:?}, \"127.0.0.0/8\"]"),
                None => "[\"127.0.0.0/8\"]".to_owned(),
            },
        ),
        _ => ("127.0.0.1:53".to_owned(), "[\"127.0.0.0/8\"]".to_owned()),
    };
    let _ = writeln!(
        s,
        "[dns]\nlisten = [{dns:?}]              # containers use it: docker run --dns {}\nzone = {zone:?}                  # <service>.{zone} for every service\nrecursion_from = {recursion}\n# upstreams = [\"127.0.0.53:53\"]     # where other names go\n",
        dns.trim_end_matches(":53")
    );
    let _ = writeln!(
        s,
        "[ingress]\nlisten = [\"0.0.0.0:443\"]             # HTTPS for https://<service>.{zone}/\nhttp_redirect = [\"0.0.0.0:80\"]\n# without certificates a self-signed one is made; real ones from an ACME CA:\n# [ingress.acme]\n# email = \"ops@{zone}\"\n# directory = \"https://acme-v02.api.letsencrypt.org/directory\""
    );
    s
}

/// Writes `text` to `path`, after checking it loads, never over an existing file.
pub fn write(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display().to_string();
    if path.exists() {
        return Err(Error::Exists(shown));
    }
    // checked from a file beside it (relative paths resolve from the config's directory)
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".vxgate-init-{}.toml", std::process::id()));
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Write(shown, e));
    }
    if let Err(e) = crate::config::load(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Invalid(e.to_string()));
    }
    // a link never replaces: if the file appeared meanwhile, this fails
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists(shown)),
        Err(e) => Err(Error::Write(shown, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_names_its_interface() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_in(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_in("Iface\n"), None);
    }

    fn with_docker() -> Found {
        Found {
            node: "h7".into(),
            underlay: Some(([10, 99, 0, 7].into(), "eth0".into())),
            docker: Some(DockerNet {
                endpoint: "unix:///var/run/docker.sock".into(),
                name: "vxnet".into(),
                bridge: "vxbr0".into(),
                subnet: Some("10.200.0.0/16".into()),
                gateway: Some([10, 200, 7, 1].into()),
                mtu: 1400,
            }),
            docker_note: None,
        }
    }

    #[test]
    fn what_was_found_becomes_a_config_that_check_accepts() {
        let dir = tempfile::tempdir().expect("tmp");
        for (found, opts) in [
            (with_docker(), Options::default()),
            (
                with_docker(),
                Options {
                    etcd: vec!["http://10.99.0.1:2379".into()],
                    zone: Some("corp.test".into()),
                    ..Options::default()
                },
            ),
            (
                Found {
                    node: "solo".into(),
                    docker_note: Some("Docker at unix:///x: no such file".into()),
                    ..Found::default()
                },
                Options::default(),
            ),
        ] {
            let text = render(&found, &opts);
            let path = dir
                .path()
                .join(format!("{}-{}.toml", found.node, opts.etcd.len()));
            write(&path, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let cfg = crate::config::load(&path).expect("loads");
            assert_eq!(cfg.node.name, found.node);
            if found.docker.is_some() {
                assert!(text.contains("bridge = \"vxbr0\""), "{text}");
                assert!(text.contains("listen = [\"10.200.7.1:53\"]"), "{text}");
                assert!(text.contains("listen = \"10.99.0.7:4789\""), "{text}");
                assert!(text.contains("mtu = 1400"), "{text}");
            } else {
                assert!(
                    text.contains("# Docker: Docker at unix:///x: no such file"),
                    "{text}"
                );
            }
            assert_eq!(
                text.contains("\nbackend = \"etcd\""),
                !opts.etcd.is_empty(),
                "{text}"
            );
            // never over an existing file: the second write is refused, the file unchanged
            let before = std::fs::read_to_string(&path).expect("read");
            assert!(matches!(write(&path, "x"), Err(Error::Exists(_))));
            assert_eq!(std::fs::read_to_string(&path).expect("read"), before);
        }
        // a config that does not load is not written
        let bad = dir.path().join("bad.toml");
        assert!(matches!(
            write(&bad, "[node]\nname = 3\n"),
            Err(Error::Invalid(_))
        ));
        assert!(!bad.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".vxgate-init"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}
