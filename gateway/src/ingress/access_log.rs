//! The access log (`ingress.access_log`): one JSON object per request, written off the
//! request path. A request hands its [`Entry`] to a bounded channel and goes on; a writer
//! thread formats and writes the lines. When the channel is full the entry is dropped and
//! counted, so a slow disk never holds up a request. The file is reopened (after logrotate
//! moved it) when [`AccessLog::reopen`] is called (SIGHUP, SIGUSR1), before the next line.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer at most; beyond it entries are dropped and counted.
const QUEUE: usize = 8192;
/// Lines written with one `write` at most.
const BATCH: usize = 256;
/// How often the writer looks at the queue when it found it short of a batch (a line waits
/// this long at most before it is written; the queue holds 8192 lines, over 200 ms of a
/// busy ingress).
const TICK: Duration = Duration::from_millis(20);

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stderr,
    File(PathBuf),
}

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct Entry {
    pub time: SystemTime,
    pub client: SocketAddr,
    /// "1.2" or "1.3".
    pub tls: &'static str,
    pub sni: Option<Arc<str>>,
    pub method: http::Method,
    pub host: String,
    /// Without the query string unless `ingress.access_log_query` is on.
    pub path: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub service: Option<Arc<str>>,
    pub backend: Option<String>,
    pub retries: u32,
    pub upstream_status: Option<u16>,
}

/// An entry as its JSON line: borrowed fields, serialized without building a value tree.
#[derive(serde::Serialize)]
struct Line<'a> {
    time: &'a str,
    client: SocketAddr,
    tls: &'static str,
    sni: Option<&'a str>,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    service: Option<&'a str>,
    backend: Option<&'a str>,
    retries: u32,
    upstream_status: Option<u16>,
}

impl Entry {
    /// The entry as one JSON line (with its newline) appended to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let t = time::OffsetDateTime::from(self.time);
        let mut stamp = [0u8; 24];
        let mut w = &mut stamp[..];
        let _ = write!(
            w,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        );
        let len = 24 - w.len();
        let line = Line {
            time: std::str::from_utf8(&stamp[..len]).unwrap_or(""),
            client: self.client,
            tls: self.tls,
            sni: self.sni.as_deref(),
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: self.duration.as_secs_f64() * 1000.0,
            service: self.service.as_deref(),
            backend: self.backend.as_deref(),
            retries: self.retries,
            upstream_status: self.upstream_status,
        };
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }
}

/// The request side of the log: hand entries over, count what could not be.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Entry>,
    reopen: Arc<AtomicBool>,
    /// Entries dropped because the writer was behind (the queue was full).
    pub dropped: AtomicU64,
    /// Lines written, and lines lost to write errors (counted by the writer).
    pub written: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    /// Log the query string too.
    pub with_query: bool,
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ingress.access_log: cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ingress.access_log: cannot start its writer thread: {0}")]
    Thread(std::io::Error),
}

impl AccessLog {
    /// Opens the target (an error stops startup) and starts the writer thread, which ends
    /// when the last `AccessLog` handle is gone, after writing what is queued.
    pub fn start(target: Target, with_query: bool) -> Result<Arc<AccessLog>, Error> {
        let out = Output::open(&target)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let (written, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let writer = Writer {
            target,
            out,
            rx,
            reopen: reopen.clone(),
            written: written.clone(),
            failed: failed.clone(),
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())
            .map_err(Error::Thread)?;
        Ok(Arc::new(AccessLog {
            tx,
            reopen,
            dropped: AtomicU64::new(0),
            written,
            failed,
            with_query,
        }))
    }

    /// Queues `entry`; never blocks.
    pub fn log(&self, entry: Entry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// The file is opened again before the next line (logrotate's `postrotate`).
    pub fn reopen(&self) {
        self.reopen.store(true, Relaxed);
    }
}

/// An entry waiting for its response body to end: counts the bytes sent, and logs the entry
/// (with the bytes both ways and the duration) when the body is done or dropped.
pub struct Pending {
    pub log: Arc<AccessLog>,
    pub start: std::time::Instant,
    pub bytes_in: Arc<AtomicU64>,
    pub entry: Option<Entry>,
}

impl Pending {
    /// `body`, counted and logged at its end.
    pub fn wrap(mut self, body: super::proxy::Body) -> super::proxy::Body {
        use http_body_util::BodyExt;
        body.map_frame(move |frame| {
            if let (Some(d), Some(e)) = (frame.data_ref(), self.entry.as_mut()) {
                e.bytes_out += d.len() as u64;
            }
            frame
        })
        .boxed()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.duration = self.start.elapsed();
            e.bytes_in = self.bytes_in.load(Relaxed);
            self.log.log(e);
        }
    }
}

enum Output {
    Stderr,
    File(std::fs::File),
}

impl Output {
    fn open(target: &Target) -> Result<Output, Error> {
        match target {
            Target::Stderr => Ok(Output::Stderr),
            Target::File(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Output::File)
                .map_err(|source| Error::Open {
                    path: path.clone(),
                    source,
                }),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Output::Stderr => std::io::stderr().lock().write_all(bytes),
            Output::File(f) => f.write_all(bytes),
        }
    }
}

struct Writer {
    target: Target,
    out: Output,
    rx: Receiver<Entry>,
    reopen: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Writer {
    /// Drains the queue every [`TICK`] (a request never wakes this thread: waking it per
    /// line cost a futex call and a context switch per request), writing what it holds in
    /// batches of [`BATCH`] lines. Ends when every sender is gone and the queue is empty.
    fn run(mut self) {
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            let mut n = 0;
            let mut gone = false;
            buf.clear();
            while n < BATCH {
                match self.rx.try_recv() {
                    Ok(e) => {
                        e.write_json(&mut buf);
                        n += 1;
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        gone = true;
                        break;
                    }
                }
            }
            if n > 0 {
                self.write(&buf, n);
            }
            if gone {
                return;
            }
            if n < BATCH {
                std::thread::sleep(TICK);
            }
        }
    }

    fn write(&mut self, buf: &[u8], n: usize) {
        if self.reopen.swap(false, Relaxed) {
            match Output::open(&self.target) {
                Ok(o) => {
                    self.out = o;
                    tracing::info!("ingress: access log reopened");
                }
                Err(e) => tracing::warn!("{e}; still writing to the old file"),
            }
        }
        match self.out.write_all(buf) {
            Ok(()) => {
                self.written.fetch_add(n as u64, Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(n as u64, Relaxed);
                tracing::debug!("ingress: access log write: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16) -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_684_000_123),
            client: "10.99.0.100:40000".parse().expect("addr"),
            tls: "1.3",
            sni: Some(Arc::from("web.example.com")),
            method: http::Method::POST,
            host: "web.example.com".into(),
            path: "/a \"q\"".into(),
            status,
            bytes_in: 5,
            bytes_out: 1024,
            duration: Duration::from_micros(1500),
            service: Some(Arc::from("web")),
            backend: Some("web-1".into()),
            retries: 1,
            upstream_status: Some(status),
        }
    }

    #[test]
    fn an_entry_is_one_json_object_with_every_field() {
        let mut out = Vec::new();
        entry(201).write_json(&mut out);
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["time"], "2025-12-02T14:00:00.123Z");
        assert_eq!(v["client"], "10.99.0.100:40000");
        assert_eq!(v["tls"], "1.3");
        assert_eq!(v["sni"], "web.example.com");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/a \"q\"");
        assert_eq!(v["status"], 201);
        assert_eq!(
            (v["bytes_in"].as_u64(), v["bytes_out"].as_u64()),
            (Some(5), Some(1024))
        );
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(
            (v["service"].as_str(), v["backend"].as_str()),
            (Some("web"), Some("web-1"))
        );
        assert_eq!(
            (v["retries"].as_u64(), v["upstream_status"].as_u64()),
            (Some(1), Some(201))
        );
        let mut none = entry(404);
        (none.service, none.backend, none.upstream_status, none.sni) = (None, None, None, None);
        let mut out = Vec::new();
        none.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert!(v["service"].is_null() && v["backend"].is_null() && v["sni"].is_null());
    }

    #[test]
    fn lines_reach_the_file_and_a_reopen_follows_a_rename() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("access.log");
        let log = AccessLog::start(Target::File(path.clone()), false).expect("start");
        let wait = |n: u64| {
            let t = std::time::Instant::now();
            while log.written.load(Relaxed) < n {
                assert!(t.elapsed() < Duration::from_secs(10), "lines not written");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        for s in [200, 201, 202] {
            log.log(entry(s));
        }
        wait(3);
        std::fs::rename(&path, dir.path().join("access.log.1")).expect("rename");
        log.reopen();
        log.log(entry(203));
        wait(4);
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).expect("old");
        let new = std::fs::read_to_string(&path).expect("new");
        assert_eq!(old.lines().count(), 3);
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains("\"status\":203"));
        assert_eq!(log.dropped.load(Relaxed), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(2);
        let log = AccessLog {
            tx,
            reopen: Arc::default(),
            dropped: AtomicU64::new(0),
            written: Arc::default(),
            failed: Arc::default(),
            with_query: false,
        };
        for _ in 0..5 {
            log.log(entry(200));
        }
        assert_eq!(
            log.dropped.load(Relaxed),
            3,
            "2 queued, 3 dropped, none blocked"
        );
    }
}
