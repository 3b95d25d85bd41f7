//! HTTP/1.1 connections to backends for one ingress worker, driven through hyper's
//! connection API. A request takes an idle connection to its backend from the worker's list
//! (the most recently used first) or opens one, and is sent on it directly; the connection goes
//! back to the list when the response body has been read to its end. The pooled client this
//! replaces added a checkout future, a (scheme, authority) key and a domain string built per
//! request, and a channel hop into its pool per request.
//!
//! As with that client: an idle connection the backend closed meanwhile hands the request
//! back unsent, and it goes out on a fresh connection; connections idle for [`IDLE_TIMEOUT`]
//! are closed; connect failures are told apart ([`Error::is_connect`]) so that the proxy can
//! eject the backend.

/// A request or response body as the ingress passes it on, to and from backends.
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Idle connections older than this are closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per backend (per worker) for as long as [`IDLE_TIMEOUT`]. More are
/// kept while they are in use again within [`EXCESS_IDLE`]: under a load with hundreds of
/// requests in flight (an HTTP/2 client with 640 streams) the connections come back in bursts
/// and go out again at once; closing all but 32 of them as they came back opened a new
/// connection for 43 % of the requests. A flood still leaves no more than 32 idle sockets
/// behind a few seconds after it ends.
pub const MAX_IDLE_PER_BACKEND: usize = 32;
/// How long an idle connection beyond [`MAX_IDLE_PER_BACKEND`] is kept.
pub const EXCESS_IDLE: Duration = Duration::from_secs(2);
/// How long opening a backend connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a backend request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection to the backend (refused, unreachable, timed out).
    #[error("connect error")]
    Connect(#[source] std::io::Error),
    /// The exchange failed on an open connection.
    #[error("backend connection error")]
    Http(#[source] hyper::Error),
    /// An HTTP/2 backend's pooled client failed.
    #[error(transparent)]
    Pooled(#[from] hyper_util::client::legacy::Error),
    /// `ingress.max_backend_connections` (in total, or this backend's half) is reached.
    #[error("backend connections exhausted ({0})")]
    Exhausted(&'static str),
}

/// `errno` values of a failed connect that say the fault is ours (out of descriptors, buffers
/// or local ports), not the backend's: such a failure must not eject a healthy backend.
const LOCAL_ERRNOS: [i32; 5] = [
    libc::EMFILE,
    libc::ENFILE,
    libc::ENOBUFS,
    libc::EADDRNOTAVAIL,
    libc::ENOMEM,
];

impl Error {
    /// The failure is this process's (no descriptor, buffer or port; the connection budget
    /// spent), not the backend's.
    pub fn is_local(&self) -> bool {
        if let Error::Exhausted(_) = self {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>()
                && io.raw_os_error().is_some_and(|e| LOCAL_ERRNOS.contains(&e))
            {
                return true;
            }
            cause = c.source();
        }
        false
    }

    /// A connection to the backend could not be opened.
    pub fn is_connect(&self) -> bool {
        match self {
            Error::Connect(_) => true,
            Error::Pooled(e) => e.is_connect(),
            Error::Http(_) | Error::Exhausted(_) => false,
        }
    }
}

/// How many HTTP/1.1 backend connections may be open, over every worker: in total, per
/// backend (half the total) and per client (a quarter, counted by the proxy as the client's
/// requests in flight). A connection holds its [`Opened`] until it closes.
#[derive(Debug)]
pub struct Budget {
    cap: usize,
    open: std::sync::atomic::AtomicUsize,
    by_backend: Arc<super::limit::Shares<SocketAddr>>,
}

impl Budget {
    pub fn new(cap: usize) -> Arc<Budget> {
        Arc::new(Budget {
            cap: cap.max(1),
            open: Default::default(),
            by_backend: Default::default(),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn try_open(self: &Arc<Self>, addr: SocketAddr) -> Result<Opened, Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let share = self
            .by_backend
            .take(&addr, super::limit::client_share(self.cap))
            .ok_or(Error::Exhausted("this backend's share"))?;
        self.open
            .fetch_update(Relaxed, Relaxed, |n| (n < self.cap).then_some(n + 1))
            .map_err(|_| Error::Exhausted("in total"))?;
        Ok(Opened {
            budget: self.clone(),
            _share: share,
        })
    }
}

/// One open backend connection's place in the [`Budget`].
#[derive(Debug)]
struct Opened {
    budget: Arc<Budget>,
    _share: super::limit::Share<SocketAddr>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.budget
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Each backend's idle connections, the longest idle first.
type Idle = HashMap<SocketAddr, VecDeque<(SendRequest<Body>, Instant)>>;

/// One worker's HTTP/1.1 backend connections.
pub struct H1Pool {
    idle: Mutex<Idle>,
    budget: Arc<Budget>,
}

impl H1Pool {
    /// A pool without a connection budget of its own (tests).
    pub fn new() -> Arc<H1Pool> {
        H1Pool::with_budget(Budget::new(usize::MAX))
    }

    /// A pool that opens connections within `budget` (shared by the workers); within a
    /// runtime, a task closes its idle connections past [`IDLE_TIMEOUT`].
    pub fn with_budget(budget: Arc<Budget>) -> Arc<H1Pool> {
        let pool = Arc::new(H1Pool {
            idle: Mutex::new(HashMap::new()),
            budget,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap(Arc::downgrade(&pool)));
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `addr` that is still open, the most recently used first.
    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let list = idle.get_mut(&addr)?;
        while let Some((tx, since)) = list.pop_back() {
            if !tx.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(tx);
            }
        }
        None
    }

    fn give_back(&self, addr: SocketAddr, tx: SendRequest<Body>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        let list = idle.entry(addr).or_default();
        list.push_back((tx, now));
        trim(list, now);
    }

    /// Closes every idle connection (the budget is spent: they make room).
    fn drop_idle(&self) {
        self.lock().clear();
    }

    /// Idle connections kept now (all backends).
    pub fn idle(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    /// Closes the idle connections that the backend closed, that waited past
    /// [`IDLE_TIMEOUT`], or past [`EXCESS_IDLE`] beyond [`MAX_IDLE_PER_BACKEND`].
    fn reap(&self) {
        let now = Instant::now();
        let mut idle = self.lock();
        for list in idle.values_mut() {
            list.retain(|(tx, since)| !tx.is_closed() && now - *since < IDLE_TIMEOUT);
            trim(list, now);
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Sends `req` (target `/path?query`; a Host header of `addr` when it has none) to the
    /// backend at `addr` and returns the response head; its body gives the connection back
    /// when read to the end.
    pub async fn request(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        if !req.headers().contains_key(http::header::HOST)
            && let Ok(v) = http::HeaderValue::from_str(&addr.to_string())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
        let Some(mut tx) = self.take(addr) else {
            return self.send_fresh(addr, req).await;
        };
        // idle, but its previous exchange may still be finishing; closed: a fresh one
        if tx.ready().await.is_err() {
            return self.send_fresh(addr, req).await;
        }
        match tx.try_send_request(req).await {
            Ok(resp) => Ok(self.returning(addr, tx, resp)),
            Err(mut e) => match e.take_message() {
                // the backend closed it before the request went out: not sent, so safe to
                // send on a new connection
                Some(req) => self.send_fresh(addr, req).await,
                None => Err(Error::Http(e.into_error())),
            },
        }
    }

    /// Sends `req` on a new connection. Boxed: it is the rare path, and its state (connect,
    /// handshake) inline would make every request's future kilobytes larger, which hyper
    /// moves into place for each request.
    fn send_fresh(
        self: &Arc<Self>,
        addr: SocketAddr,
        req: Request<Body>,
    ) -> std::pin::Pin<Box<impl Future<Output = Result<Response<Body>, Error>>>> {
        Box::pin(async move {
            let opened = match self.budget.try_open(addr) {
                Ok(o) => o,
                Err(e) => {
                    // idle connections of this worker hold budget too: closed, so that
                    // the next request finds room
                    self.drop_idle();
                    return Err(e);
                }
            };
            let mut tx = connect(addr, opened).await?;
            tx.ready().await.map_err(Error::Http)?;
            let resp = tx.send_request(req).await.map_err(Error::Http)?;
            Ok(self.returning(addr, tx, resp))
        })
    }

    /// The response, its body giving `tx` back at its end (at once when it has none). An
    /// upgraded connection is the upgrade's, never given back.
    fn returning(
        self: &Arc<Self>,
        addr: SocketAddr,
        tx: SendRequest<Body>,
        resp: Response<Incoming>,
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let back =
            (parts.status != StatusCode::SWITCHING_PROTOCOLS).then(|| (self.clone(), addr, tx));
        let mut body = GiveBack { body, back };
        if hyper::body::Body::is_end_stream(&body.body) {
            body.done();
        }
        Response::from_parts(parts, body.boxed())
    }
}

/// Opens a connection to `addr` and starts driving it (a task per connection, upgrades
/// allowed); its place in the budget is given back when it closes.
async fn connect(addr: SocketAddr, opened: Opened) -> Result<SendRequest<Body>, Error> {
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Error::Connect(e)),
            Err(_) => {
                return Err(Error::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )));
            }
        };
    let _ = stream.set_nodelay(true);
    let (tx, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(Error::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(backend = %addr, "ingress: backend connection: {e}");
        }
        drop(opened);
    });
    Ok(tx)
}

/// Closes the longest idle connections of `list` beyond [`MAX_IDLE_PER_BACKEND`] that have
/// been idle for [`EXCESS_IDLE`].
fn trim<T>(list: &mut VecDeque<(T, Instant)>, now: Instant) {
    while list.len() > MAX_IDLE_PER_BACKEND
        && list
            .front()
            .is_some_and(|(_, since)| now - *since >= EXCESS_IDLE)
    {
        list.pop_front();
    }
}

/// Every second until the pool is gone: [`H1Pool::reap`].
async fn reap(pool: Weak<H1Pool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.reap(),
            None => return,
        }
    }
}

/// A response body that gives its connection back to the pool once read to its end. Dropped
/// before that (the client went away) or failed, the connection is not reused.
struct GiveBack {
    body: Incoming,
    back: Option<(Arc<H1Pool>, SocketAddr, SendRequest<Body>)>,
}

impl GiveBack {
    fn done(&mut self) {
        if let Some((pool, addr, tx)) = self.back.take() {
            pool.give_back(addr, tx);
        }
    }
}

impl hyper::body::Body for GiveBack {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let got = Pin::new(&mut this.body).poll_frame(cx);
        match &got {
            Poll::Ready(None) => this.done(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.done(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        got
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend on loopback answering every request `ok` (2 bytes), closing each connection
    /// after `per_conn` answers; counts the connections it accepted and records each
    /// request head.
    async fn backend(per_conn: usize) -> (SocketAddr, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                a.fetch_add(1, SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut answered = 0;
                    let mut chunk = [0u8; 4096];
                    while answered < per_conn {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            h.lock()
                                .expect("heads")
                                .push(String::from_utf8_lossy(&head).into_owned());
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                            answered += 1;
                        }
                    }
                    // then closed, as a backend closing kept-alive connections does
                });
            }
        });
        (addr, accepted, heads)
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path)
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .expect("request")
    }

    async fn body_of(resp: Response<Body>) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection_and_concurrent_ones_open_more() {
        let (addr, accepted, heads) = backend(usize::MAX).await;
        let pool = H1Pool::new();
        for i in 0..50 {
            let resp = pool
                .request(addr, get(&format!("/r{i}?q=1")))
                .await
                .expect("response");
            assert_eq!(resp.status(), 200);
            assert_eq!(body_of(resp).await, b"ok");
        }
        assert_eq!(
            accepted.load(SeqCst),
            1,
            "50 requests in turn: one connection"
        );
        assert_eq!(pool.idle(), 1);
        // origin form on the wire, and a Host from the target
        let first = heads.lock().expect("heads")[0].clone();
        assert!(first.starts_with("GET /r0?q=1 HTTP/1.1\r\n"), "{first}");
        assert!(
            first
                .to_ascii_lowercase()
                .contains(&format!("host: {addr}\r\n")),
            "{first}"
        );
        // four at once while none has finished its body: four connections, all kept after
        let resps = futures_all((0..4).map(|_| pool.request(addr, get("/")))).await;
        assert_eq!(accepted.load(SeqCst), 4, "the idle one and three new");
        for r in resps {
            assert_eq!(body_of(r.expect("response")).await, b"ok");
        }
        assert_eq!(pool.idle(), 4);
        // a body dropped unread: that connection is not reused
        let r = pool.request(addr, get("/")).await.expect("response");
        drop(r);
        assert_eq!(pool.idle(), 3);
    }

    #[test]
    fn idle_connections_beyond_the_cap_are_kept_only_while_recently_used() {
        let now = Instant::now();
        let ago = |s: u64| now - Duration::from_secs(s);
        // a burst came back just now: all kept
        let mut list: VecDeque<(usize, Instant)> = (0..100).map(|i| (i, now)).collect();
        trim(&mut list, now);
        assert_eq!(list.len(), 100);
        // 60 idle for 3 s, 40 just back: the 60 go, down to the cap at most
        let mut list: VecDeque<(usize, Instant)> = (0..100)
            .map(|i| (i, if i < 60 { ago(3) } else { now }))
            .collect();
        trim(&mut list, now);
        assert_eq!(list.len(), 40, "the recent 40 stay (more than the cap)");
        assert_eq!(list.front().map(|e| e.0), Some(60));
        // all idle for 3 s: the cap's worth stays, the most recently used
        let mut list: VecDeque<(usize, Instant)> = (0..100).map(|i| (i, ago(3))).collect();
        trim(&mut list, now);
        assert_eq!(list.len(), MAX_IDLE_PER_BACKEND);
        assert_eq!(list.back().map(|e| e.0), Some(99));
    }

    async fn futures_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut pinned: Vec<Pin<Box<F>>> = futs.map(Box::pin).collect();
        let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, o) in pinned.iter_mut().zip(out.iter_mut()) {
                if o.is_none() {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(v) => *o = Some(v),
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        out.into_iter().map(|o| o.expect("done")).collect()
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_replaced_and_connect_failures_are_told_apart() {
        // the backend closes every connection after one answer, without saying so
        let (addr, accepted, _) = backend(1).await;
        let pool = H1Pool::new();
        for _ in 0..20 {
            let resp = pool
                .request(addr, get("/"))
                .await
                .expect("answered on a fresh connection");
            assert_eq!(body_of(resp).await, b"ok");
            tokio::time::sleep(Duration::from_millis(5)).await; // the close arrives
        }
        assert_eq!(accepted.load(SeqCst), 20);
        // nobody listens: a connect error, which the proxy ejects the backend for
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead_addr = dead.local_addr().expect("addr");
        drop(dead);
        let e = pool
            .request(dead_addr, get("/"))
            .await
            .expect_err("refused");
        assert!(e.is_connect(), "{e:?}");
    }
}
