//! The etcd registry backend with real processes on loopback: an etcd started by the test
//! (non-default ports, temporary data dir, stopped by its PID) and two or three vxgate nodes.
//! Checked: containers cross between nodes (DNS and the admin API), API changes follow, a
//! killed node leaves within the lease TTL + 1 s, a restarted one re-registers, a stopped one
//! leaves at once, an etcd outage keeps the last state and converges after, and a compacted
//! watch revision triggers a full resync.
#![cfg(feature = "etcd")]

mod common;

use common::{dns_rcode, free_port, http, spawn_vxgate};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;

struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
}

impl Etcd {
    fn start() -> Etcd {
        let mut e = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("tmp"),
            client: free_port(),
            peer: free_port(),
        };
        e.spawn();
        e
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// Starts (or restarts, on the same data dir) the member and waits until it answers.
    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("log");
        let child = Command::new("etcd")
            .arg("--name=t")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian package etcd-server) must be installed");
        self.child = Some(child);
        let ok = wait_until(Duration::from_secs(20), || {
            self.ctl(&["endpoint", "health"]).status.success()
        });
        assert!(ok.is_some(), "etcd did not become healthy");
    }

    /// Stops the member (SIGKILL to the PID this test started).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .arg("--command-timeout=2s")
            .args(args)
            .output()
            .expect("etcdctl (Debian package etcd-client) must be installed")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Vx {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    admin: u16,
    dns: u16,
    _dir: tempfile::TempDir,
}

impl Vx {
    /// A node with one config container `web-{node}` at `ip`.
    fn start(node: &str, ip: &str, etcd: &Etcd, ttl_s: u64) -> Vx {
        let dir = tempfile::tempdir().expect("tmp");
        let (admin, dns) = (free_port(), free_port());
        let cfg = format!(
            "[node]\nname = \"{node}\"\nstate_dir = \"{state}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [registry]\nbackend = \"etcd\"\nendpoints = [\"{url}\"]\nlease_ttl_s = {ttl_s}\n\
             [dns]\nlisten = [\"127.0.0.1:{dns}\"]\nzone = \"example.com\"\n\
             [[containers]]\nname = \"web-{node}\"\nip = \"{ip}\"\nport = 80\nlabels = {{ app = \"web\" }}\n",
            state = dir.path().display(),
            url = etcd.url(),
        );
        let config = dir.path().join("vxgate.toml");
        std::fs::write(&config, cfg).expect("write");
        let mut vx = Vx {
            child: None,
            log: dir.path().join("vxgate.log"),
            config,
            admin,
            dns,
            _dir: dir,
        };
        vx.spawn();
        vx
    }

    fn spawn(&mut self) {
        let child = spawn_vxgate(&self.config, &self.log);
        assert!(child.is_some(), "vxgate did not start:\n{}", self.logs());
        self.child = child;
    }

    fn signal(&mut self, sig: libc::c_int) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn rcode(&self, name: &str) -> u8 {
        dns_rcode(self.dns, name)
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = http(self.admin, "GET", "/metrics", "", None);
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Vx {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Polls `cond` every 20 ms; returns how long it took, or `None` at the timeout.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn resolves(vx: &Vx, name: &str, rcode: u8, within: Duration) -> Duration {
    wait_until(within, || vx.rcode(name) == rcode).unwrap_or_else(|| {
        panic!(
            "{name} did not get rcode {rcode} within {within:?}; node log:\n{}",
            vx.logs()
        )
    })
}

fn add(vx: &Vx, name: &str, ip: &str) {
    let body = format!(r#"{{"name":"{name}","ip":"{ip}","port":80,"labels":{{"app":"api"}}}}"#);
    let (status, out) = http(vx.admin, "POST", "/v1/containers", &body, None);
    assert_eq!(status, 201, "{out}");
}

#[test]
fn nodes_share_containers_and_leave_by_lease_or_at_once() {
    let etcd = Etcd::start();
    let ttl = 2;
    let a = Vx::start("a", "10.0.0.1", &etcd, ttl);
    let mut b = Vx::start("b", "10.0.0.2", &etcd, ttl);
    let sec = Duration::from_secs;
    resolves(&a, "web-b.example.com", NOERROR, sec(5));
    resolves(&b, "web-a.example.com", NOERROR, sec(5));

    let (_, list) = http(a.admin, "GET", "/v1/containers", "", None);
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    let web_b = list
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == "web-b"))
        .expect("web-b listed on a");
    assert_eq!(web_b["origin"], "remote");
    assert_eq!(web_b["node"], "b");
    let (status, _) = http(a.admin, "DELETE", "/v1/containers/web-b", "", None);
    assert_eq!(status, 409, "a remote container is removed on its own node");
    assert_eq!(a.metric("vxgate_registry_etcd_connected"), 1.0);
    assert_eq!(a.metric("vxgate_registry_remote_nodes"), 1.0);

    // API changes on b show up on a
    add(&b, "api-b", "10.0.0.3");
    let t = resolves(&a, "api-b.example.com", NOERROR, sec(2));
    eprintln!("a container added on b answered on a after {t:?}");
    let (status, _) = http(b.admin, "DELETE", "/v1/containers/api-b", "", None);
    assert_eq!(status, 200);
    let t = resolves(&a, "api-b.example.com", NXDOMAIN, sec(2));
    eprintln!("a container removed on b was gone on a after {t:?}");

    // b dies: its lease expires, and a drops it within the TTL + 1 s
    b.signal(libc::SIGKILL);
    let t = resolves(&a, "web-b.example.com", NXDOMAIN, sec(ttl + 1));
    eprintln!("a killed node left the others' DNS after {t:?} (TTL {ttl} s)");
    assert_eq!(a.metric("vxgate_registry_remote_nodes"), 0.0);

    // b restarts: it registers again and reads the fleet
    b.spawn();
    resolves(&a, "web-b.example.com", NOERROR, sec(3));
    resolves(&b, "web-a.example.com", NOERROR, sec(3));

    // b stops cleanly: its lease is revoked, and a drops it at once
    b.signal(libc::SIGTERM);
    let t = resolves(&a, "web-b.example.com", NXDOMAIN, sec(1));
    eprintln!("a stopped node left the others' DNS after {t:?}");
    let keys = etcd.ctl(&["get", "--prefix", "--keys-only", "/vxgate/"]);
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(!keys.contains("/b"), "b's keys are gone: {keys}");
    assert!(keys.contains("/vxgate/containers/a/web-a"), "{keys}");
}

#[test]
fn an_etcd_outage_keeps_the_last_state_and_converges() {
    let mut etcd = Etcd::start();
    let a = Vx::start("a", "10.0.0.1", &etcd, 2);
    let b = Vx::start("b", "10.0.0.2", &etcd, 2);
    let sec = Duration::from_secs;
    resolves(&a, "web-b.example.com", NOERROR, sec(5));

    etcd.kill();
    let start = Instant::now();
    let (mut asked, mut failed) = (0, 0);
    let mut added = false;
    while start.elapsed() < sec(10) {
        if a.rcode("web-b.example.com") != NOERROR {
            failed += 1;
        }
        asked += 1;
        if !added && start.elapsed() > sec(2) {
            // a change while etcd is away waits for it
            add(&b, "api-b", "10.0.0.3");
            added = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("etcd down 10 s: {asked} queries on a for b's container, {failed} failed");
    assert_eq!(failed, 0, "the last known state is served");
    assert!(a.metric("vxgate_registry_etcd_errors_total") >= 1.0);
    assert_eq!(a.metric("vxgate_registry_etcd_connected"), 0.0);

    etcd.spawn();
    let t = resolves(&a, "api-b.example.com", NOERROR, sec(10));
    eprintln!("after etcd came back, b's new container answered on a after {t:?}");
    assert_eq!(a.rcode("web-b.example.com"), NOERROR);
    assert_eq!(a.metric("vxgate_registry_etcd_connected"), 1.0);
}

/// Writes `n` KiB of junk under the prefix (keys the nodes ignore), in transactions.
fn flood(etcd: &Etcd, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.url()], None)
            .await
            .expect("connect");
        let value = "x".repeat(1024);
        for chunk in 0..n.div_ceil(100) {
            let ops: Vec<etcd_client::TxnOp> = (0..100)
                .map(|i| {
                    etcd_client::TxnOp::put(
                        format!("/vxgate/junk/{}", chunk * 100 + i),
                        value.as_str(),
                        None,
                    )
                })
                .collect();
            c.txn(etcd_client::Txn::new().and_then(ops))
                .await
                .expect("txn");
        }
    });
}

#[test]
fn a_compacted_watch_revision_triggers_a_full_resync() {
    let etcd = Etcd::start();
    let sec = Duration::from_secs;
    // a long TTL: a is paused below and must not lose its lease meanwhile
    let mut a = Vx::start("a", "10.0.0.1", &etcd, 60);
    let b = Vx::start("b", "10.0.0.2", &etcd, 60);
    resolves(&a, "web-b.example.com", NOERROR, sec(5));
    assert_eq!(a.metric("vxgate_registry_etcd_compactions_total"), 0.0);

    // a stops reading; its watch falls behind by more than the stream can buffer, the
    // history it needs is compacted away, and b changes meanwhile
    let pid = a.child.as_ref().map(|c| c.id()).expect("pid") as libc::pid_t;
    // SAFETY: kill(2) on the PID of a child this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    add(&b, "api-b", "10.0.0.3");
    flood(&etcd, 20_000);
    let (status, _) = http(b.admin, "DELETE", "/v1/containers/web-b", "", None);
    assert_eq!(status, 200);
    let rev = etcd.ctl(&["get", "/vxgate/nodes/b", "-w", "json"]);
    let rev: serde_json::Value = serde_json::from_slice(&rev.stdout).expect("json");
    let rev = rev["header"]["revision"].as_i64().expect("revision");
    let out = etcd.ctl(&["compact", &rev.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };

    let ok = wait_until(sec(10), || {
        a.metric("vxgate_registry_etcd_compactions_total") >= 1.0
    });
    assert!(ok.is_some(), "no compaction seen:\n{}", a.logs());
    resolves(&a, "api-b.example.com", NOERROR, sec(5));
    resolves(&a, "web-b.example.com", NXDOMAIN, sec(5));
    assert!(a.metric("vxgate_registry_etcd_resyncs_total") >= 2.0);
    a.signal(libc::SIGTERM);
}
