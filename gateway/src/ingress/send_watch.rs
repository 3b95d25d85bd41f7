//! The send timeout (`ingress.send_timeout_ms`, as nginx's `send_timeout`): a response whose
//! next bytes wait for the client for that long closes its connection. A client that never
//! reads (HTTP/1.1), or an HTTP/2 stream whose window stays at 0 while the client answers
//! PINGs, would otherwise hold its service's `max_in_flight` slots and a backend
//! connection for as long as it likes.
//!
//! Each response body in progress has a slot in its connection's [`Sends`]: hyper polls a
//! body only when it has room to send (h1: its write buffer; h2: flow-control window), so a
//! body that handed over a frame and is not asked for the next one waits for the client.
//! A body that is polled and has nothing yet (a slow backend) is not waiting for the client.
//!
//! A body can also wait behind the buffers of a client that reads, slowly (hyper's write
//! buffer, the socket's send buffer that the kernel lets refill only once a third is free):
//! that is no stall. So the connection is closed only when a body has waited
//! `send_timeout` and the socket says the client is not reading either ([`Drain`]: no
//! backlog acknowledged for that long). The connection's loop checks on its timer.

use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

const FREE: u64 = 0;
/// In use, waiting on the backend (or being written).
const BUSY: u64 = 1;
// any other value: waiting for the client since (value - 2) ms of `now_ms`

/// The response bodies in progress on one connection.
pub struct Sends {
    slots: Box<[AtomicU64]>,
}

impl Sends {
    /// Room for `n` bodies at once (an HTTP/2 connection's stream limit; 1 for HTTP/1.1).
    pub fn new(n: usize) -> Arc<Sends> {
        Arc::new(Sends {
            slots: (0..n.max(1)).map(|_| AtomicU64::new(FREE)).collect(),
        })
    }

    /// A slot for a body handed over at `now` (it waits for the client until polled); None
    /// when all are taken (the body goes unwatched; the idle timeout still bounds it).
    pub fn watch(self: &Arc<Self>, now: u64) -> Option<Watch> {
        let i = self
            .slots
            .iter()
            .position(|s| s.compare_exchange(FREE, now + 2, Relaxed, Relaxed).is_ok())?;
        Some(Watch {
            sends: self.clone(),
            slot: i,
        })
    }

    /// How long the body that has waited longest for the client has waited at `now`
    /// (0: none waits).
    pub fn stalled_ms(&self, now: u64) -> u64 {
        self.slots
            .iter()
            .map(|s| s.load(Relaxed))
            .filter(|v| *v > BUSY)
            .map(|since| now.saturating_sub(since - 2))
            .max()
            .unwrap_or(0)
    }
}

/// Whether the client is taking what the connection sends: from the bytes written to its
/// socket and the bytes still in the socket's send queue (`SIOCOUTQ`: unacknowledged), read
/// on each tick. The client acknowledged some of a backlog since the last tick: it reads.
/// A client that stopped reading acknowledges nothing (its window is 0); a zero-window HTTP/2
/// stream leaves no backlog (nothing can be sent), so PING answers acknowledged in passing do
/// not count.
#[derive(Debug, Default)]
pub struct Drain {
    acked: u64,
    backlog: u64,
    /// When a backlog last shrank by acknowledgements (ms of `now_ms`; 0: never).
    last_progress: u64,
}

impl Drain {
    /// One observation at `now`: `sent` bytes written to the socket so far, `queued` of them
    /// not yet acknowledged.
    pub fn observe(&mut self, now: u64, sent: u64, queued: u64) {
        let acked = sent.saturating_sub(queued);
        if acked > self.acked && self.backlog > 0 {
            self.last_progress = now;
        }
        self.acked = acked;
        self.backlog = queued;
    }

    /// Whether a backlog drained within the last `window` ms before `now`.
    pub fn client_reading(&self, now: u64, window: u64) -> bool {
        self.last_progress > 0 && now.saturating_sub(self.last_progress) < window
    }
}

/// One body's slot; freed when dropped.
pub struct Watch {
    sends: Arc<Sends>,
    slot: usize,
}

impl Watch {
    fn set(&self, v: u64) {
        self.sends.slots[self.slot].store(v, Relaxed);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.set(FREE);
    }
}

/// A response body under a [`Watch`] (and whatever else must live as long as it: an h2
/// stream's guard).
pub struct Watched<B, G> {
    body: B,
    watch: Option<Watch>,
    _guard: G,
}

impl<B, G> Watched<B, G> {
    pub fn new(body: B, watch: Option<Watch>, guard: G) -> Self {
        Watched {
            body,
            watch,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for Watched<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(w) = &this.watch {
            w.set(BUSY);
        }
        let r = Pin::new(&mut this.body).poll_frame(cx);
        match (&r, &this.watch) {
            (Poll::Ready(Some(Ok(_))), Some(w)) => w.set(super::now_ms() + 2),
            (Poll::Ready(None | Some(Err(_))), _) => this.watch = None,
            _ => {}
        }
        r
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
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    #[test]
    fn a_body_waits_for_the_client_from_hand_over_until_polled_and_after_each_frame() {
        let sends = Sends::new(2);
        let a = sends.watch(1000).expect("slot");
        assert_eq!(
            sends.stalled_ms(1000 + 700),
            700,
            "handed over, never polled"
        );
        a.set(BUSY);
        assert_eq!(
            sends.stalled_ms(5000),
            0,
            "waiting on the backend is not a stall"
        );
        a.set(3000 + 2);
        let b = sends.watch(4000).expect("second slot");
        assert!(sends.watch(4000).is_none(), "two slots");
        assert_eq!(sends.stalled_ms(5000), 2000, "the longest wait counts");
        drop(a);
        assert_eq!(sends.stalled_ms(5000), 1000);
        drop(b);
        assert_eq!(sends.stalled_ms(9000), 0);
        assert!(sends.watch(9000).is_some(), "freed slots are reused");
    }

    #[test]
    fn a_client_reads_while_it_acknowledges_a_backlog() {
        let mut d = Drain::default();
        d.observe(1000, 100_000, 100_000);
        assert!(!d.client_reading(1000, 1000), "nothing acknowledged yet");
        d.observe(1250, 150_000, 120_000); // 30,000 of a backlog acknowledged
        assert!(d.client_reading(1250, 1000), "a reader, however slow");
        d.observe(1500, 150_000, 120_000);
        d.observe(2000, 150_000, 120_000);
        assert!(d.client_reading(2000, 1000));
        d.observe(2300, 150_000, 120_000);
        assert!(
            !d.client_reading(2300, 1000),
            "nothing acknowledged for 1.05 s: stopped"
        );
        // no backlog (a zero-window stream, nothing to send): a PING answer sent and
        // acknowledged in passing is no reading
        let mut z = Drain::default();
        z.observe(1000, 5_000, 0);
        z.observe(1250, 5_040, 0);
        z.observe(1500, 5_080, 0);
        assert!(!z.client_reading(1500, 1000));
    }

    #[tokio::test]
    async fn polling_a_watched_body_marks_its_slot_busy_then_free_at_its_end() {
        let sends = Sends::new(1);
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
        let stream = tokio_stream_from(rx);
        let mut body = Watched::new(StreamBody::new(stream), sends.watch(0), ());
        assert!(sends.stalled_ms(super::super::now_ms() + 10) >= 10);
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .expect("send");
        let f = body.frame().await.expect("a frame").expect("ok");
        assert_eq!(f.into_data().ok().as_deref(), Some(&b"x"[..]));
        // a frame handed to the connection: waiting for the client again
        let t = super::super::now_ms();
        assert!(sends.stalled_ms(t + 50) >= 50);
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(sends.stalled_ms(t + 50_000), 0, "ended: the slot is free");
        assert!(sends.watch(t).is_some());
    }

    /// A stream of the receiver's items (no tokio-stream dependency).
    fn tokio_stream_from<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
