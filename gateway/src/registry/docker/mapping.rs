//! Docker's view of a container, turned into a registry entry, without I/O.
//!
//! [`entry`] maps one `GET /containers/{id}/json` answer (Engine API 1.41 and later) to a
//! [`Container`] of origin [`Origin::Docker`], or says why the container is left out.
//! [`classify`] says what an `/events` message asks of the source: look the container up
//! again (one inspect), drop it at once (no API call), or nothing.

use crate::registry::{Container, Health, Origin};
use crate::wire::ethernet::MacAddr;
use bollard::models::{
    ContainerInspectResponse, EventMessage, EventMessageTypeEnum, HealthStatusEnum,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The label that leaves a container out when it is `false`.
pub const LABEL_ENABLE: &str = "vxgate.enable";
/// The label that names the port the ingress sends traffic to.
pub const LABEL_PORT: &str = "vxgate.port";
/// Port used when a container neither labels nor exposes one.
pub const DEFAULT_PORT: u16 = 80;

/// What the mapping needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `docker.network`: the Docker network whose address is published.
    pub network: Option<String>,
    /// This node's name (the entries' owner).
    pub node: String,
    /// The overlay network the entries belong to.
    pub overlay_network: String,
    /// `dns.service_label`: the label whose value names the service.
    pub service_label: String,
}

/// Why a running container is not published. Counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// Not running (created, exited, dead, restarting) or paused: not serving traffic.
    NotRunning,
    /// `vxgate.enable=false`.
    Disabled,
    /// Not attached to `docker.network`.
    OtherNetwork,
    /// On several networks and `docker.network` is not set.
    AmbiguousNetwork,
    /// No IP address on the chosen network (network mode host or none).
    NoAddress,
    /// The `vxgate.port` label is not a port number.
    BadPort,
    /// The service label's value is not a DNS label (it becomes `<value>.<zone>`).
    BadService,
    /// The answer lacks the container's name or id.
    Malformed,
}

impl Skip {
    pub const ALL: [Skip; 8] = [
        Skip::NotRunning,
        Skip::Disabled,
        Skip::OtherNetwork,
        Skip::AmbiguousNetwork,
        Skip::NoAddress,
        Skip::BadPort,
        Skip::BadService,
        Skip::Malformed,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotRunning => "not_running",
            Skip::Disabled => "disabled",
            Skip::OtherNetwork => "other_network",
            Skip::AmbiguousNetwork => "ambiguous_network",
            Skip::NoAddress => "no_address",
            Skip::BadPort => "bad_port",
            Skip::BadService => "bad_service",
            Skip::Malformed => "malformed",
        }
    }
}

/// The registry entry for an inspected container, or why there is none.
pub fn entry(c: &ContainerInspectResponse, s: &Settings) -> Result<Container, Skip> {
    let name = c
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/'))
        .filter(|n| !n.is_empty())
        .ok_or(Skip::Malformed)?;
    let state = c.state.as_ref();
    let running = state.and_then(|s| s.running).unwrap_or(false);
    let paused = state.and_then(|s| s.paused).unwrap_or(false);
    let restarting = state.and_then(|s| s.restarting).unwrap_or(false);
    if !running || paused || restarting {
        return Err(Skip::NotRunning);
    }
    let config = c.config.as_ref();
    let labels: BTreeMap<String, String> = config
        .and_then(|c| c.labels.as_ref())
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    if labels
        .get(LABEL_ENABLE)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
    {
        return Err(Skip::Disabled);
    }
    if let Some(service) = labels.get(&s.service_label)
        && vxgate_dns::name::check_label(service).is_err()
    {
        return Err(Skip::BadService);
    }
    let networks = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref());
    let endpoint = match (&s.network, networks) {
        (Some(want), Some(nets)) => nets.get(want).ok_or(Skip::OtherNetwork)?,
        (Some(_), None) => return Err(Skip::OtherNetwork),
        (None, Some(nets)) if nets.len() == 1 => nets.values().next().ok_or(Skip::NoAddress)?,
        (None, Some(nets)) if nets.len() > 1 => return Err(Skip::AmbiguousNetwork),
        (None, _) => return Err(Skip::NoAddress),
    };
    let ip: IpAddr = endpoint
        .ip_address
        .as_deref()
        .and_then(|a| a.parse().ok())
        .ok_or(Skip::NoAddress)?;
    let mac = endpoint
        .mac_address
        .as_deref()
        .and_then(|m| m.parse::<MacAddr>().ok());
    let port = match labels.get(LABEL_PORT) {
        Some(p) => match p.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(Skip::BadPort),
        },
        None => lowest_exposed_tcp(config.and_then(|c| c.exposed_ports.as_deref()))
            .unwrap_or(DEFAULT_PORT),
    };
    // No HEALTHCHECK: serving. With one: only once Docker says healthy.
    let ready = match state.and_then(|s| s.health.as_ref()).and_then(|h| h.status) {
        None | Some(HealthStatusEnum::EMPTY | HealthStatusEnum::NONE) => true,
        Some(HealthStatusEnum::HEALTHY) => true,
        Some(HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY) => false,
    };
    Ok(Container {
        name: name.to_owned(),
        ip,
        mac,
        port,
        labels,
        network: s.overlay_network.clone(),
        node: s.node.clone(),
        health: Health::Unknown,
        ready,
        origin: Origin::Docker,
    })
}

/// [`entry`] for the raw bytes of an inspect answer; bytes that are not one are `Malformed`.
pub fn entry_from_json(bytes: &[u8], s: &Settings) -> Result<Container, Skip> {
    let inspect: ContainerInspectResponse =
        serde_json::from_slice(bytes).map_err(|_| Skip::Malformed)?;
    entry(&inspect, s)
}

/// The lowest exposed TCP port of `["8080/tcp", "53/udp", ...]`.
fn lowest_exposed_tcp(ports: Option<&[String]>) -> Option<u16> {
    ports?
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            (proto == "tcp").then(|| port.parse::<u16>().ok()).flatten()
        })
        .filter(|&p| p > 0)
        .min()
}

/// What an event asks of the Docker source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The container's state may have changed: inspect it (one API call) and update.
    Inspect(String),
    /// Its networks changed: inspect it only if the source has it (published or skipped while
    /// running). A container that is not running gets there with its `start`, and one that
    /// stopped left with its `die`, so neither costs a call.
    InspectIfKnown(String),
    /// The container stopped serving: drop it now, no API call.
    Remove(String),
    /// Nothing to do.
    Ignore,
}

/// The events the source subscribes to, of containers and then of networks (the Engine
/// filters the rest out server-side; `health_status` matches `health_status: healthy` and the
/// like). Also the event kinds counted one by one.
pub const EVENTS: [&str; 10] = [
    "start",
    "die",
    "stop",
    "destroy",
    "pause",
    "unpause",
    "health_status",
    "rename",
    "connect",
    "disconnect",
];

/// The counter an event falls under: its action without the `: detail` of health events.
pub fn kind(e: &EventMessage) -> &str {
    let action = e.action.as_deref().unwrap_or("");
    action.split(':').next().unwrap_or(action)
}

/// What to do for one event.
pub fn classify(e: &EventMessage) -> Action {
    let actor = e.actor.as_ref();
    match e.typ {
        Some(EventMessageTypeEnum::CONTAINER) => {
            let Some(id) = actor.and_then(|a| a.id.clone()).filter(|i| !i.is_empty()) else {
                return Action::Ignore;
            };
            match kind(e) {
                "die" | "stop" | "destroy" | "pause" => Action::Remove(id),
                "start" | "unpause" | "health_status" | "rename" => Action::Inspect(id),
                _ => Action::Ignore,
            }
        }
        Some(EventMessageTypeEnum::NETWORK) => {
            let container = actor
                .and_then(|a| a.attributes.as_ref())
                .and_then(|a| a.get("container"))
                .filter(|c| !c.is_empty())
                .cloned();
            match (kind(e), container) {
                ("connect" | "disconnect", Some(id)) => Action::InspectIfKnown(id),
                _ => Action::Ignore,
            }
        }
        _ => Action::Ignore,
    }
}

#[cfg(test)]
mod tests {
    //! Inspect answers and events captured from a real dockerd 20.10 (API 1.41), see
    //! `gateway/tests/fixtures/docker/`.
    use super::*;

    fn inspect(name: &str) -> ContainerInspectResponse {
        let text = match name {
            "web-1" => include_str!("../../../tests/fixtures/docker/inspect-web-1.json"),
            "api-1" => include_str!("../../../tests/fixtures/docker/inspect-api-1.json"),
            "sick" => include_str!("../../../tests/fixtures/docker/inspect-sick.json"),
            "starting" => include_str!("../../../tests/fixtures/docker/inspect-starting.json"),
            "healthy" => include_str!("../../../tests/fixtures/docker/inspect-healthy.json"),
            "two" => include_str!("../../../tests/fixtures/docker/inspect-two.json"),
            "nonet" => include_str!("../../../tests/fixtures/docker/inspect-nonet.json"),
            "off" => include_str!("../../../tests/fixtures/docker/inspect-off.json"),
            "paused" => include_str!("../../../tests/fixtures/docker/inspect-paused.json"),
            "exited" => include_str!("../../../tests/fixtures/docker/inspect-exited.json"),
            _ => panic!("no fixture {name}"),
        };
        serde_json::from_str(text).expect("bollard parses dockerd 20.10's answer")
    }

    fn settings(network: Option<&str>) -> Settings {
        Settings {
            network: network.map(str::to_owned),
            node: "h1".into(),
            overlay_network: "default".into(),
            service_label: "app".into(),
        }
    }

    #[test]
    fn a_running_container_becomes_an_entry_with_its_address_mac_and_labels() {
        let c = entry(&inspect("web-1"), &settings(Some("vxnet"))).expect("published");
        assert_eq!(c.name, "web-1", "the leading / is dropped");
        assert_eq!(c.ip, "10.200.1.16".parse::<IpAddr>().expect("ip"));
        assert_eq!(c.mac, Some("02:42:0a:c8:01:10".parse().expect("mac")));
        assert_eq!(c.port, DEFAULT_PORT, "no label, nothing exposed: 80");
        assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!((c.node.as_str(), c.network.as_str()), ("h1", "default"));
        assert_eq!(c.origin, Origin::Docker);
        assert!(c.ready && c.is_serving(), "no HEALTHCHECK: serving");
        // its only network is taken when docker.network is not set
        assert_eq!(entry(&inspect("web-1"), &settings(None)), Ok(c));
    }

    #[test]
    fn the_port_label_wins_over_exposed_ports() {
        // api-1: vxgate.port=8080, exposes 8080 and 9000
        assert_eq!(
            entry(&inspect("api-1"), &settings(Some("vxnet"))).map(|c| c.port),
            Ok(8080)
        );
        let mut unlabelled = inspect("api-1");
        if let Some(l) = unlabelled.config.as_mut().and_then(|c| c.labels.as_mut()) {
            l.remove(LABEL_PORT);
        }
        assert_eq!(
            entry(&unlabelled, &settings(Some("vxnet"))).map(|c| c.port),
            Ok(8080),
            "the lowest exposed TCP port"
        );
        let mut bad = inspect("api-1");
        if let Some(l) = bad.config.as_mut().and_then(|c| c.labels.as_mut()) {
            l.insert(LABEL_PORT.into(), "http".into());
        }
        assert_eq!(entry(&bad, &settings(Some("vxnet"))), Err(Skip::BadPort));
        let mut bad = inspect("api-1");
        if let Some(l) = bad.config.as_mut().and_then(|c| c.labels.as_mut()) {
            l.insert("app".into(), "my api".into());
        }
        assert_eq!(entry(&bad, &settings(Some("vxnet"))), Err(Skip::BadService));
        assert_eq!(
            lowest_exposed_tcp(Some(&[
                "53/udp".into(),
                "9000/tcp".into(),
                "443/tcp".into()
            ])),
            Some(443)
        );
        assert_eq!(lowest_exposed_tcp(Some(&["53/udp".into()])), None);
    }

    #[test]
    fn docker_health_gates_serving() {
        for (name, ready) in [("sick", false), ("starting", false), ("healthy", true)] {
            let c = entry(&inspect(name), &settings(Some("vxnet"))).expect(name);
            assert_eq!(c.ready, ready, "{name}");
            assert_eq!(c.is_serving(), ready, "{name}");
        }
    }

    #[test]
    fn network_choice() {
        // "two" is on vxnet and "other"
        assert_eq!(
            entry(&inspect("two"), &settings(None)),
            Err(Skip::AmbiguousNetwork)
        );
        assert_eq!(
            entry(&inspect("two"), &settings(Some("other"))).map(|c| c.ip.to_string()),
            Ok("10.201.0.2".to_string())
        );
        assert!(entry(&inspect("two"), &settings(Some("vxnet"))).is_ok());
        assert_eq!(
            entry(&inspect("web-1"), &settings(Some("elsewhere"))),
            Err(Skip::OtherNetwork)
        );
        // --network none: a network without an address
        assert_eq!(
            entry(&inspect("nonet"), &settings(None)),
            Err(Skip::NoAddress)
        );
        assert_eq!(
            entry(&inspect("nonet"), &settings(Some("vxnet"))),
            Err(Skip::OtherNetwork)
        );
    }

    #[test]
    fn disabled_paused_and_exited_containers_are_left_out() {
        assert_eq!(
            entry(&inspect("off"), &settings(Some("vxnet"))),
            Err(Skip::Disabled)
        );
        assert_eq!(
            entry(&inspect("paused"), &settings(Some("vxnet"))),
            Err(Skip::NotRunning)
        );
        assert_eq!(
            entry(&inspect("exited"), &settings(Some("vxnet"))),
            Err(Skip::NotRunning)
        );
        let mut nameless = inspect("web-1");
        nameless.name = Some("/".into());
        assert_eq!(entry(&nameless, &settings(None)), Err(Skip::Malformed));
    }

    #[test]
    fn every_prefix_of_an_answer_is_malformed_until_whole() {
        let whole = include_bytes!("../../../tests/fixtures/docker/inspect-api-1.json");
        let s = settings(Some("vxnet"));
        let want = entry(&inspect("api-1"), &s);
        assert!(want.is_ok());
        for n in 0..whole.len() {
            let got = entry_from_json(&whole[..n], &s);
            // the only prefix that parses is the answer without its trailing newline
            if whole[n..].iter().all(u8::is_ascii_whitespace) {
                assert_eq!(got, want);
            } else {
                assert_eq!(got, Err(Skip::Malformed), "prefix of {n} bytes");
            }
        }
        assert_eq!(entry_from_json(whole, &s), want);
    }

    #[test]
    fn events_ask_for_one_inspect_or_a_removal() {
        let events: Vec<EventMessage> = include_str!("../../../tests/fixtures/docker/events.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("bollard parses the event"))
            .collect();
        let id = "85d298113d4ae7d0463bd173ceaf325d5b5382aad97f5a5733f2b1f7b4639195";
        let got: Vec<(String, Action)> = events
            .iter()
            .map(|e| (kind(e).to_owned(), classify(e)))
            .collect();
        let inspect = || Action::Inspect(id.into());
        let if_known = || Action::InspectIfKnown(id.into());
        let remove = || Action::Remove(id.into());
        let want = [
            ("create", Action::Ignore),
            ("connect", if_known()),
            ("start", inspect()),
            ("health_status", inspect()),
            ("pause", remove()),
            ("unpause", inspect()),
            ("disconnect", if_known()),
            ("disconnect", if_known()),
            ("connect", if_known()),
            ("rename", inspect()),
            ("kill", Action::Ignore),
            ("health_status", inspect()),
            ("kill", Action::Ignore),
            ("die", remove()),
            ("disconnect", if_known()),
            ("stop", remove()),
            ("destroy", remove()),
        ];
        let want: Vec<(String, Action)> =
            want.into_iter().map(|(k, a)| (k.to_owned(), a)).collect();
        assert_eq!(got, want);
        // the subscription names every event that is not ignored
        for (k, a) in &got {
            if *a != Action::Ignore {
                assert!(EVENTS.contains(&k.as_str()), "{k}");
            }
        }
    }
}
