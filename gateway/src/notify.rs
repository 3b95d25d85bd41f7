//! systemd's notify protocol (sd_notify(3)), for `Type=notify` units: one datagram per state
//! to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@` and an abstract name).
//! `READY=1` once every listener is bound and the registry has its first state, `RELOADING=1`
//! then `READY=1` around a SIGHUP, `STOPPING=1` when the drain starts, and `WATCHDOG=1` every
//! half of `$WATCHDOG_USEC` when the unit sets `WatchdogSec`. Without `$NOTIFY_SOCKET`,
//! nothing is sent.

use std::time::Duration;

/// Sends `state` to systemd, if vxgate runs under it; failures are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!("sd_notify {state:?}: {e}");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// How often to send `WATCHDOG=1`: half the unit's `WatchdogSec`, when it is set for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
