use super::load::{Step, key_at, line_of_key, steps};
use super::*;

#[test]
fn empty_config_takes_documented_defaults() {
    let c = parse("", Path::new(".")).expect("empty config is valid");
    assert_eq!(c.node.name, "vxgate");
    assert_eq!(c.admin.listen, "127.0.0.1:9180".parse().expect("addr"));
    assert_eq!(c.registry.backend, RegistryBackend::Static);
    assert!(c.overlay.is_none() && c.dns.is_none() && c.ingress.is_none());
    assert_eq!(c.service_label(), "app");
}

#[test]
fn typed_values_and_defaults_in_sections() {
    let c = parse(
        r#"
[overlay]
listen = "10.99.0.1:4789"
[[overlay.networks]]
name = "default"
vni = 42
[dns]
listen = ["10.200.1.1:53"]
zone = "Example.com"
recursion_from = ["10.200.0.0/16"]
[[containers]]
name = "web-1"
ip = "10.200.1.11"
port = 80
mac = "02:00:0a:c8:01:0b"
labels = { app = "web" }
"#,
        Path::new("."),
    )
    .expect("valid");
    let o = c.overlay.as_ref().expect("overlay");
    assert_eq!(o.fdb_aging, Duration::from_secs(300));
    assert_eq!(o.networks[0].tap, "vxg0");
    assert_eq!(o.networks[0].mtu, 1450);
    let d = c.dns.as_ref().expect("dns");
    assert_eq!(d.ttl, Duration::from_secs(5));
    assert_eq!(d.upstream_timeout, Duration::from_millis(2000));
    assert_eq!(
        d.recursion_from[0],
        "10.200.0.0/16".parse::<IpNet>().expect("net")
    );
    assert_eq!(
        c.containers[0].mac,
        Some("02:00:0a:c8:01:0b".parse().expect("mac"))
    );
}

#[test]
fn docker_endpoint_comes_from_the_key_then_docker_host_then_the_default() {
    let c = parse("[docker]\nnetwork = \"vxnet\"\n", Path::new(".")).expect("valid");
    let d = c.docker.as_ref().expect("docker");
    assert_eq!(d.network.as_deref(), Some("vxnet"));
    assert_eq!(d.endpoint_text(None), "unix:///var/run/docker.sock");
    assert_eq!(
        d.endpoint_text(Some("unix:///run/user/1000/docker.sock")),
        "unix:///run/user/1000/docker.sock"
    );
    assert_eq!(d.endpoint_text(Some("")), "unix:///var/run/docker.sock");
    let keyed = DockerConfig {
        endpoint: Some("tcp://127.0.0.1:2375".into()),
        network: None,
    };
    assert_eq!(
        keyed.endpoint_text(Some("unix:///x")),
        "tcp://127.0.0.1:2375"
    );
    assert_eq!(
        DockerEndpoint::parse("tcp://127.0.0.1:2375"),
        Ok(DockerEndpoint::Tcp("127.0.0.1:2375".into()))
    );
    assert_eq!(
        DockerEndpoint::parse("unix:///var/run/docker.sock"),
        Ok(DockerEndpoint::Unix("/var/run/docker.sock".into()))
    );
    for bad in [
        "",
        "unix://relative.sock",
        "tcp://:2375",
        "tcp://h:0",
        "ssh://h",
    ] {
        assert!(DockerEndpoint::parse(bad).is_err(), "{bad}");
    }
    assert!(parse("", Path::new(".")).expect("valid").docker.is_none());
}

#[test]
fn key_paths_map_to_lines() {
    let text = "[node]\nname = \"h1\"\n\n[[containers]]\nname = \"a\"\n\n[[containers]]\nname = \"b\"\nip = \"1.2.3.4\"\n";
    assert_eq!(line_of_key(text, "node.name"), 2);
    assert_eq!(line_of_key(text, "containers[1].ip"), 9);
    // a key that is absent points at its nearest written ancestor
    assert_eq!(line_of_key(text, "containers[1].port"), 7);
    assert_eq!(
        key_at(text, text.find("1.2.3.4").expect("in text")),
        "containers[1].ip"
    );
}

#[test]
fn step_parsing() {
    assert_eq!(
        steps("overlay.networks[1].vni"),
        vec![
            Step::Key("overlay"),
            Step::Key("networks"),
            Step::Index(1),
            Step::Key("vni")
        ]
    );
}
