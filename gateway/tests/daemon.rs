//! `vxgate run` as a process: SIGHUP reloads (a broken config is rejected and the old one
//! stays), SIGTERM drains and exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(config: &std::path::Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vxgate"))
            .args(["run", "--log-level", "info", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("vxgate starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Daemon { child, lines }
    }

    /// Waits for a log line containing `text`; returns it.
    fn expect_line(&self, text: &str) -> String {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains(text) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no log line with {text:?}; saw:\n{}", seen.join("\n")),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `[admin]` section on a free loopback port (tests run at once).
fn admin_section() -> String {
    format!("[admin]\nlisten = \"127.0.0.1:{}\"\n", common::free_port())
}

const ONE: &str =
    "[[containers]]\nname = \"web-1\"\nip = \"10.0.0.1\"\nport = 80\nlabels = { app = \"web\" }\n";
const TWO: &str = "[[containers]]\nname = \"web-2\"\nip = \"10.0.0.2\"\nport = 80\n";

#[test]
fn sighup_reloads_rejects_broken_configs_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vxgate.toml");
    // tests run at once: each vxgate's admin API on a port of its own
    let admin = admin_section();
    std::fs::write(&path, format!("{admin}{ONE}")).expect("write");
    let mut d = Daemon::start(&path);
    assert!(d.expect_line("vxgate running").contains("containers=1"));

    // A broken config is rejected with FILE:LINE and the process keeps running.
    std::fs::write(&path, format!("{admin}{ONE}{TWO}port = 0\n")).expect("write");
    d.signal(libc::SIGHUP);
    let line = d.expect_line("reload rejected");
    assert!(line.contains("vxgate.toml:"), "{line}");
    assert!(
        d.child.try_wait().expect("wait").is_none(),
        "vxgate died on a broken reload"
    );

    // A good config is applied.
    std::fs::write(&path, format!("{admin}{ONE}{TWO}")).expect("write");
    d.signal(libc::SIGHUP);
    assert!(d.expect_line("config reloaded").contains("containers=2"));

    d.signal(libc::SIGTERM);
    d.expect_line("stopped");
    let status = d.child.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_broken_config_at_start_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vxgate.toml");
    std::fs::write(&path, "[node]\nname = \"bad name\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_vxgate"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vxgate.toml:2: node.name"));
}

/// SIGTERM while a health probe waits on a backend that never answers: the probe does not
/// hold the shutdown (it used to, for its whole timeout, up to the 10 s drain limit), so a
/// restart is not an outage of that length.
#[test]
fn sigterm_does_not_wait_for_health_probes_in_flight() {
    // a backend that completes TCP handshakes (the kernel's backlog) and never answers
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vxgate.toml");
    std::fs::write(
        &path,
        format!(
            "{}[node]\nstate_dir = \"{}\"\n[ingress]\nlisten = [\"127.0.0.1:{}\"]\nzone = \"example.com\"\n\
             [ingress.health]\ninterval_ms = 100\ntimeout_ms = 30000\n\
             [[containers]]\nname = \"web-1\"\nip = \"127.0.0.1\"\nport = {port}\nlabels = {{ app = \"web\" }}\n",
            admin_section(),
            dir.path().display(),
            common::free_port()
        ),
    )
    .expect("write");
    let mut d = Daemon::start(&path);
    d.expect_line("vxgate running");
    // the first probe goes out within an interval and then waits on the silent backend
    std::thread::sleep(Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    d.signal(libc::SIGTERM);
    let mut seen = Vec::new();
    loop {
        match d.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("stopped") => break,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no \"stopped\" line; saw:\n{}", seen.join("\n")),
        }
    }
    assert!(
        !seen.iter().any(|l| l.contains("still busy")),
        "the drain waited for the probe:\n{}",
        seen.join("\n")
    );
    assert_eq!(d.child.wait().expect("exits").code(), Some(0));
    eprintln!("stopped {:?} after SIGTERM", t0.elapsed());
    drop(silent);
}

/// Issue 33 item 2: under systemd (`Type=notify`, `WatchdogSec`), vxgate says READY=1 once it
/// runs, WATCHDOG=1 every half of WATCHDOG_USEC, RELOADING=1 then READY=1 around a SIGHUP, and
/// STOPPING=1 when SIGTERM starts the drain; a fake `$NOTIFY_SOCKET` receives them.
#[test]
fn systemd_hears_ready_watchdog_reload_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let path = dir.path().join("vxgate.toml");
    std::fs::write(&path, format!("{}{ONE}", admin_section())).expect("write");
    let child = Command::new(env!("CARGO_BIN_EXE_vxgate"))
        .args(["run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::null())
        .spawn()
        .expect("vxgate starts");
    // signalled and reaped by the Daemon; its log lines are not read here
    let mut d = Daemon {
        child,
        lines: mpsc::channel().1,
    };
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    // the watchdog ticks (every 100 ms)
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    d.signal(libc::SIGHUP);
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("READY=1") {
        seen.push(next());
    }
    assert!(seen.iter().any(|s| s == "RELOADING=1"), "{seen:?}");
    d.signal(libc::SIGTERM);
    let mut last = String::new();
    while last != "STOPPING=1" {
        last = next();
        assert!(last == "WATCHDOG=1" || last == "STOPPING=1", "{last}");
    }
    assert_eq!(d.child.wait().expect("exits").code(), Some(0));
}
