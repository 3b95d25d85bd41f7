//! WireGuard between hosts (`[overlay.encryption] mode = "wireguard"`), sans-IO: VXLAN runs
//! between tunnel addresses inside WireGuard, as the kernel's `vxlan` over a `wg` interface
//! does, so such a host is a peer.
//!
//! ```text
//!  send:  VXLAN datagram ─► [IPv4 tunnel→tunnel | UDP →4789 | VXLAN | frame] ─► Tunn::encapsulate ─► peer's endpoint
//!  recv:  WireGuard datagram ─► peer (handshake: by static key; else receiver index) ─► Tunn::decapsulate
//!         ─► inner IPv4 from the peer's tunnel address to ours, UDP to 4789 ─► the VXLAN datagram
//! ```
//!
//! The cryptography is boringtun's `noise` module (Noise IK, ChaCha20-Poly1305 on ring,
//! rekeying, replay window, cookies under load); nothing here is hand-written crypto. One
//! `Tunn` per peer behind a mutex: the portable datapath is one thread, so the lock is never
//! contended. The peer table is swapped whole when peers come and go (static config, etcd
//! node records), so the datapath reads it without a lock. Keys are `wg genkey`'s format: 32 bytes, base64.

use arc_swap::ArcSwap;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Session, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// The inner IPv4 and UDP headers in front of a VXLAN datagram.
pub const INNER_HEADERS: usize = 28;
/// Where a transport data message's sealed packet starts (type, receiver index, counter).
pub const DATA_OFFSET: usize = 16;
/// The authentication tag after it.
pub const TAG_LEN: usize = 16;
/// WireGuard's transport overhead (header 16, tag 16) on top of the inner packet.
pub const OVERHEAD: usize = DATA_OFFSET + TAG_LEN;
/// VXLAN's UDP port, inside the tunnel too.
pub const VXLAN_PORT: u16 = 4789;
/// Handshake messages per second, from everyone, before a valid cookie (mac2) is required
/// (boringtun's device uses the same figure).
const HANDSHAKES_PER_SECOND: u64 = 100;

pub use crate::crypto::{Key, encode_key, parse_key};

/// The public key of `private` (as `wg pubkey`).
pub fn public_key(private: &Key) -> Key {
    PublicKey::from(&StaticSecret::from(*private)).to_bytes()
}

/// A new private key (clamped, as `wg genkey` writes it).
pub fn generate_key() -> Result<Key, ring::error::Unspecified> {
    use ring::rand::SecureRandom as _;
    let mut k = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut k)?;
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    Ok(k)
}

fn bad_key(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// The private key in `path`. A file readable by others, or not a key, is an error.
pub fn load_key(path: &std::path::Path) -> std::io::Result<Key> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(bad_key(format!(
            "{} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    parse_key(&text).ok_or_else(|| {
        bad_key(format!(
            "{} holds no key (expected 32 bytes of base64, as `wg genkey` writes)",
            path.display()
        ))
    })
}

/// The private key in `path`, or a new one written there (mode 0600, directory made) when
/// the file does not exist. A file readable by others, or not a key, is an error.
pub fn load_or_create_key(path: &std::path::Path) -> std::io::Result<Key> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = bad_key;
    match load_key(path) {
        Ok(key) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                crate::privilege::private_dir(dir)?;
            }
            let key = generate_key().map_err(|_| bad("no randomness for a key".into()))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            writeln!(f, "{}", encode_key(&key))?;
            tracing::info!(path = %path.display(), public_key = %encode_key(&public_key(&key)), "overlay: generated this host's WireGuard key");
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// One remote host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub public_key: Key,
    /// Its WireGuard endpoint on the underlay.
    pub endpoint: SocketAddr,
    /// Its tunnel address: VXLAN datagrams to and from it.
    pub address: Ipv4Addr,
}

/// `[overlay.encryption]` with the key loaded.
#[derive(Clone)]
pub struct WgSpec {
    pub listen: SocketAddr,
    pub address: Ipv4Addr,
    pub private_key: Key,
    pub allow_plaintext: bool,
    pub peers: Vec<PeerSpec>,
}

impl std::fmt::Debug for WgSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgSpec")
            .field("listen", &self.listen)
            .field("address", &self.address)
            .field("public_key", &encode_key(&public_key(&self.private_key)))
            .field("allow_plaintext", &self.allow_plaintext)
            .field("peers", &self.peers)
            .finish()
    }
}

/// Why a WireGuard datagram or an inner packet was dropped (counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgDrop {
    /// Not a WireGuard message, or one for no peer of ours (unknown key or index).
    UnknownPeer,
    /// Failed authentication, a replay, a stale handshake (boringtun's verdict).
    Rejected,
    /// The inner packet's source is not the sending peer's tunnel address.
    NotPeerSource,
    /// The inner packet is not IPv4/UDP to our tunnel address and port 4789.
    NotVxlan,
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct WgCounters {
    pub sealed: AtomicU64,
    pub opened: AtomicU64,
    /// Handshake messages sent (initiations, responses, cookies) and keepalives.
    pub control_sent: AtomicU64,
    /// Handshake initiations sent (first handshakes, retries and rekeys).
    pub initiations: AtomicU64,
    /// Initiations sent while a session was up: rekeys (age, a key change).
    pub rekeys: AtomicU64,
    /// Handshakes completed: a response taken as initiator, or sent as responder.
    pub handshakes: AtomicU64,
    /// Initiations sent because a peer's data arrived for no session of ours (it kept a
    /// session from before our restart).
    pub restarts_seen: AtomicU64,
    /// Cookie replies sent: handshakes over the rate while under load, answered with a
    /// cookie instead of a Diffie-Hellman.
    pub cookies_sent: AtomicU64,
    pub unknown_peer: AtomicU64,
    pub rejected: AtomicU64,
    pub not_peer_source: AtomicU64,
    pub not_vxlan: AtomicU64,
    /// Plain VXLAN datagrams dropped (`allow_plaintext = false`).
    pub plaintext_dropped: AtomicU64,
}

impl WgCounters {
    fn drop(&self, why: WgDrop) {
        match why {
            WgDrop::UnknownPeer => &self.unknown_peer,
            WgDrop::Rejected => &self.rejected,
            WgDrop::NotPeerSource => &self.not_peer_source,
            WgDrop::NotVxlan => &self.not_vxlan,
        }
        .fetch_add(1, Relaxed);
    }

    /// Counts a message this host sends; `had_session`: the peer's session was up before.
    fn sent(&self, msg: &[u8], had_session: bool) {
        match msg.first() {
            Some(1) => {
                self.initiations.fetch_add(1, Relaxed);
                if had_session {
                    self.rekeys.fetch_add(1, Relaxed);
                }
            }
            Some(2) => {
                self.handshakes.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
}

struct Peer {
    spec: PeerSpec,
    /// Its place in the receiver indexes (`slot << 8 | session`), never reused.
    slot: u32,
    /// Where its datagrams go: the configured endpoint, then wherever it last sent an
    /// authenticated datagram from (WireGuard's roaming).
    endpoint: Mutex<SocketAddr>,
    tunn: Mutex<Tunn>,
}

impl Peer {
    fn has_session(tunn: &Tunn) -> bool {
        tunn.time_since_last_handshake().is_some()
    }

    /// An authenticated datagram came from `src`: the peer is there now (roaming).
    fn roamed(&self, src: SocketAddr) {
        let mut endpoint = lock(&self.endpoint);
        if *endpoint != src {
            *endpoint = src;
        }
    }
}

/// This host's key pair.
struct Keys {
    private: StaticSecret,
    public: PublicKey,
}

/// The peers, swapped whole when they change (the datapath reads without a lock).
#[derive(Default)]
struct Table {
    peers: Vec<Arc<Peer>>,
    by_address: HashMap<Ipv4Addr, Arc<Peer>>,
    by_key: HashMap<Key, Arc<Peer>>,
    by_slot: HashMap<u32, Arc<Peer>>,
}

/// Every peer's session, and the demultiplexing of what arrives. Peers come and go
/// ([`Crypto::set_peers`]) and the key changes ([`Crypto::set_private_key`]) while it runs.
pub struct Crypto {
    address: Ipv4Addr,
    keys: ArcSwap<Keys>,
    table: ArcSwap<Table>,
    /// The next peer's slot (24 bits of receiver index).
    next_slot: AtomicU32,
    /// Serialises changes of peers and key.
    edit: Mutex<()>,
    /// This host's public key, for whoever publishes it (the etcd node record).
    public_tx: tokio::sync::watch::Sender<Key>,
    /// Nodes of the shared registry left out for publishing no key (shown by the API).
    left_out: Mutex<Vec<String>>,
    /// Checks every handshake message's mac1 before any Diffie-Hellman, and above
    /// [`HANDSHAKES_PER_SECOND`] answers with a cookie unless it carries a valid mac2.
    gate: ArcSwap<RateLimiter>,
    /// When the gate's count was last reset (once a second).
    gate_reset: Mutex<std::time::Instant>,
    pub allow_plaintext: bool,
    pub counters: WgCounters,
}

/// What to do with a VXLAN datagram sealed for a peer.
#[derive(Debug)]
pub enum Sealed<'a> {
    /// Send these bytes to this endpoint (a transport message, or a handshake initiation
    /// while the datagram waits in the session's queue).
    Send(&'a [u8], SocketAddr),
    /// The destination is no WireGuard peer.
    NotAPeer,
    /// Nothing to send now.
    Nothing,
}

/// What a received WireGuard datagram gave.
#[derive(Debug)]
pub enum Opened<'a> {
    /// A VXLAN datagram from `from` (the peer's tunnel address and UDP source port).
    Vxlan {
        from: SocketAddr,
        datagram: &'a mut [u8],
    },
    /// A handshake or keepalive: nothing for the overlay.
    Nothing,
    Drop(WgDrop),
}

/// A peer [`Crypto::set_peers`] left out, and why (logged by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub address: Ipv4Addr,
    pub why: &'static str,
}

impl Crypto {
    pub fn new(spec: &WgSpec) -> Crypto {
        let private = StaticSecret::from(spec.private_key);
        let public = PublicKey::from(&private);
        let (public_tx, _) = tokio::sync::watch::channel(public.to_bytes());
        let c = Crypto {
            address: spec.address,
            keys: ArcSwap::from_pointee(Keys { private, public }),
            table: ArcSwap::from_pointee(Table::default()),
            next_slot: AtomicU32::new(0),
            edit: Mutex::new(()),
            public_tx,
            left_out: Mutex::new(Vec::new()),
            gate: ArcSwap::from_pointee(RateLimiter::new(&public, HANDSHAKES_PER_SECOND)),
            gate_reset: Mutex::new(std::time::Instant::now()),
            allow_plaintext: spec.allow_plaintext,
            counters: WgCounters::default(),
        };
        c.set_peers(&spec.peers);
        c
    }

    /// This host's tunnel address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Makes `peers` the peer set. A peer whose key, address and endpoint are unchanged
    /// keeps its session; a new or changed one starts without (the first datagram shakes
    /// hands). Our own address or key, and a second peer with an address or key already
    /// taken, are left out and returned.
    pub fn set_peers(&self, peers: &[PeerSpec]) -> Vec<Refused> {
        let _edit = lock(&self.edit);
        let old = self.table.load_full();
        let keys = self.keys.load_full();
        let mut table = Table::default();
        let mut refused = Vec::new();
        for p in peers {
            let why = if p.address == self.address {
                Some("this host's own tunnel address")
            } else if p.public_key == keys.public.to_bytes() {
                Some("this host's own public key")
            } else if table.by_address.contains_key(&p.address) {
                Some("a tunnel address another peer has")
            } else if table.by_key.contains_key(&p.public_key) {
                Some("a public key another peer has")
            } else {
                None
            };
            if let Some(why) = why {
                refused.push(Refused {
                    address: p.address,
                    why,
                });
                continue;
            }
            let peer = match old.by_key.get(&p.public_key) {
                Some(same) if same.spec == *p => same.clone(),
                _ => {
                    let slot = self.next_slot.fetch_add(1, Relaxed) & 0x00ff_ffff;
                    Arc::new(Peer {
                        spec: p.clone(),
                        slot,
                        endpoint: Mutex::new(p.endpoint),
                        tunn: Mutex::new(Tunn::new(
                            keys.private.clone(),
                            PublicKey::from(p.public_key),
                            None,
                            Some(25),
                            slot,
                            None,
                        )),
                    })
                }
            };
            table.by_address.insert(p.address, peer.clone());
            table.by_key.insert(p.public_key, peer.clone());
            table.by_slot.insert(peer.slot, peer.clone());
            table.peers.push(peer);
        }
        self.table.store(Arc::new(table));
        refused
    }

    /// Changes this host's private key (SIGHUP after the key file changed): every session
    /// ends, and the next datagram to each peer shakes hands with the new key. Returns
    /// whether the key changed.
    pub fn set_private_key(&self, key: &Key) -> bool {
        let _edit = lock(&self.edit);
        let private = StaticSecret::from(*key);
        let public = PublicKey::from(&private);
        if public == self.keys.load().public {
            return false;
        }
        self.keys.store(Arc::new(Keys {
            private: private.clone(),
            public,
        }));
        self.gate
            .store(Arc::new(RateLimiter::new(&public, HANDSHAKES_PER_SECOND)));
        for peer in &self.table.load().peers {
            lock(&peer.tunn).set_static_private(private.clone(), public, None);
        }
        self.public_tx.send_replace(public.to_bytes());
        true
    }

    /// Records the nodes left out for publishing no key; returns whether that changed.
    pub fn set_left_out(&self, nodes: Vec<String>) -> bool {
        let mut l = lock(&self.left_out);
        let changed = *l != nodes;
        *l = nodes;
        changed
    }

    /// Nodes of the shared registry left out for publishing no WireGuard key.
    pub fn left_out(&self) -> Vec<String> {
        lock(&self.left_out).clone()
    }

    /// This host's public key now and as it changes.
    pub fn subscribe_public_key(&self) -> tokio::sync::watch::Receiver<Key> {
        self.public_tx.subscribe()
    }

    /// Whether `vtep` is a WireGuard peer's tunnel address.
    pub fn is_peer(&self, vtep: SocketAddr) -> bool {
        matches!(vtep.ip(), IpAddr::V4(a) if self.table.load().by_address.contains_key(&a))
    }

    /// Seals the VXLAN datagram in `packet[INNER_HEADERS..]` for the peer whose tunnel
    /// address is `to`'s (the room in front takes the inner IPv4 and UDP headers, from
    /// `sport`) into `out` (at least the packet's length + 32, and 148).
    pub fn seal<'a>(
        &self,
        to: SocketAddr,
        sport: u16,
        packet: &mut [u8],
        out: &'a mut [u8],
    ) -> Sealed<'a> {
        let IpAddr::V4(dst) = to.ip() else {
            return Sealed::NotAPeer;
        };
        let table = self.table.load();
        let Some(peer) = table.by_address.get(&dst) else {
            return Sealed::NotAPeer;
        };
        let endpoint = *lock(&peer.endpoint);
        let mut tunn = lock(&peer.tunn);
        match self.seal_locked(&mut tunn, (dst, to.port(), sport), packet, out) {
            Some((msg, data)) => {
                if data {
                    self.counters.sealed.fetch_add(1, Relaxed);
                }
                Sealed::Send(msg, endpoint)
            }
            None => Sealed::Nothing,
        }
    }

    /// One datagram through a locked session: the inner headers written in its room, then
    /// sealed into `out`. Returns the message to send and whether it is transport data (else
    /// a handshake initiation, the datagram waiting in the session's queue, counted here;
    /// the caller counts the transport data, once per batch).
    fn seal_locked<'a>(
        &self,
        tunn: &mut Tunn,
        (dst, dport, sport): (Ipv4Addr, u16, u16),
        packet: &mut [u8],
        out: &'a mut [u8],
    ) -> Option<(&'a [u8], bool)> {
        let payload = packet.len().checked_sub(INNER_HEADERS)?;
        let head = packet.first_chunk_mut::<INNER_HEADERS>()?;
        write_inner(head, self.address, dst, sport, dport, payload);
        let had_session = Peer::has_session(tunn);
        match tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(msg) if msg.first() == Some(&4) => Some((msg, true)),
            TunnResult::WriteToNetwork(msg) => {
                self.counters.sent(msg, had_session);
                self.counters.control_sent.fetch_add(1, Relaxed);
                Some((msg, false))
            }
            _ => None,
        }
    }

    /// Seals, where they lie, the VXLAN datagrams laid out in `data` every `stride` bytes
    /// (the last may be shorter), for the peer whose tunnel address is `to`'s: each is
    /// [`DATA_OFFSET`] bytes of room, [`INNER_HEADERS`] bytes of room, the datagram and
    /// [`TAG_LEN`] bytes of room, and becomes the transport data message (the layout of one
    /// GSO send). The peer's session is fetched once for them all and sealed with outside
    /// its lock. Without a session the datagrams go to the session's queue behind a
    /// handshake; what that sends (an initiation; transport data, should a session come up
    /// meanwhile) goes through `control`, with `scratch` (a datagram's length and 148 more)
    /// as its buffer. Returns the endpoint and how many bytes of `data` to send (0: they
    /// were queued), or None when `to` is no peer.
    pub fn seal_segments(
        &self,
        to: SocketAddr,
        sport: u16,
        (data, stride): (&mut [u8], usize),
        scratch: &mut [u8],
        control: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> Option<(SocketAddr, usize)> {
        let IpAddr::V4(dst) = to.ip() else {
            return None;
        };
        let table = self.table.load();
        let peer = table.by_address.get(&dst)?;
        let endpoint = *lock(&peer.endpoint);
        let session = lock(&peer.tunn).sending_session();
        // the smallest message: the room, the inner headers and one byte
        const MIN: usize = OVERHEAD + INNER_HEADERS + 1;
        let segments = data.chunks_mut(stride.max(MIN));
        let mut sealed = 0u64;
        if let Some(session) = session {
            // sealed outside the session's lock: the queue threads seal for one peer at once
            // (the nonce is an atomic counter); the lock again only for the timers
            let (mut bytes, mut len) = (0, 0);
            for msg in segments {
                if msg.len() < MIN {
                    break;
                }
                let packet = msg.len() - OVERHEAD;
                let Some(head) = msg[DATA_OFFSET..].first_chunk_mut::<INNER_HEADERS>() else {
                    break;
                };
                write_inner(
                    head,
                    self.address,
                    dst,
                    sport,
                    to.port(),
                    packet - INNER_HEADERS,
                );
                session.seal_in_place(msg);
                sealed += 1;
                bytes += packet;
                len += msg.len();
            }
            lock(&peer.tunn).note_data_sent(sealed as usize, bytes);
            self.counters.sealed.fetch_add(sealed, Relaxed);
            return Some((endpoint, len));
        }
        // no session yet: through the Tunn, which queues the datagrams and shakes hands
        let mut tunn = lock(&peer.tunn);
        for msg in segments {
            if msg.len() < MIN || scratch.len() < msg.len() + 148 {
                break;
            }
            let end = msg.len() - TAG_LEN;
            let packet = &mut msg[DATA_OFFSET..end];
            match self.seal_locked(&mut tunn, (dst, to.port(), sport), packet, scratch) {
                Some((m, true)) => {
                    control(m, endpoint);
                    sealed += 1;
                }
                Some((m, false)) => control(m, endpoint),
                None => {}
            }
        }
        self.counters.sealed.fetch_add(sealed, Relaxed);
        Some((endpoint, 0))
    }

    /// Opens a datagram that arrived on the WireGuard socket from `src`, into `out` (at
    /// least as long as the datagram). Handshake answers and queued datagrams to send go
    /// through `send`.
    pub fn open<'a>(
        &self,
        src: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
        send: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> Opened<'a> {
        if matches!(datagram.first(), Some(1 | 2)) {
            // mac1 before any Diffie-Hellman; under load, a cookie instead
            match self
                .gate
                .load()
                .verify_packet(Some(src.ip()), datagram, out)
            {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    send(cookie, src);
                    self.counters.cookies_sent.fetch_add(1, Relaxed);
                    return Opened::Nothing;
                }
                Err(_) => {
                    self.counters.drop(WgDrop::Rejected);
                    return Opened::Drop(WgDrop::Rejected);
                }
            }
        }
        let table = self.table.load();
        let Some(peer) = self.peer_of(&table, datagram) else {
            if datagram.first() == Some(&4) {
                self.nudge(&table, src, out, send);
            }
            self.counters.drop(WgDrop::UnknownPeer);
            return Opened::Drop(WgDrop::UnknownPeer);
        };
        if datagram.first() == Some(&4)
            && let Some(opened) = self.open_data(peer, datagram, out)
        {
            return match opened {
                Ok(len) => {
                    peer.roamed(src);
                    match len {
                        Some(len) => self.vxlan_in(peer, &mut out[..len]),
                        None => {
                            // a keepalive (the initiator's first message on a new session)
                            send_queued(&mut lock(&peer.tunn), src, send);
                            Opened::Nothing
                        }
                    }
                }
                Err((why, _)) => {
                    self.counters.drop(why);
                    Opened::Drop(why)
                }
            };
        }
        let mut tunn = lock(&peer.tunn);
        let verdict = match tunn.decapsulate(Some(src.ip()), datagram, out) {
            TunnResult::Done => Ok(None),
            TunnResult::Err(e) => {
                tracing::trace!(peer = %peer.spec.address, "overlay: WireGuard datagram refused: {e:?}");
                Err((WgDrop::Rejected, e))
            }
            TunnResult::WriteToNetwork(msg) => {
                self.counters.sent(msg, false);
                send(msg, src);
                self.counters.control_sent.fetch_add(1, Relaxed);
                Ok(None)
            }
            TunnResult::WriteToTunnelV4(packet, from) => {
                if from != peer.spec.address {
                    Err((WgDrop::NotPeerSource, WireGuardError::InvalidPacket))
                } else {
                    Ok(Some(packet.len()))
                }
            }
            TunnResult::WriteToTunnelV6(..) => {
                Err((WgDrop::NotPeerSource, WireGuardError::InvalidPacket))
            }
        };
        let len = match verdict {
            Err((why, e)) => {
                drop(tunn);
                if matches!(
                    e,
                    WireGuardError::NoCurrentSession | WireGuardError::WrongIndex
                ) {
                    self.nudge(&table, src, out, send);
                }
                self.counters.drop(why);
                return Opened::Drop(why);
            }
            Ok(len) => len,
        };
        if datagram.first() == Some(&2) {
            // a response to our initiation: the session is up
            self.counters.handshakes.fetch_add(1, Relaxed);
        }
        peer.roamed(src);
        let Some(len) = len else {
            send_queued(&mut tunn, src, send);
            return Opened::Nothing;
        };
        drop(tunn);
        self.vxlan_in(peer, &mut out[..len])
    }

    /// Opens the datagrams of one read from `src` (`seg` bytes each, the last maybe shorter:
    /// a GRO run) where they lie in `run`; `each(from, range)` is given every VXLAN datagram
    /// in them, by its place in `run`. Transport data is opened in place, with the session
    /// fetched once per receiver index in the run and what was authenticated accounted once
    /// (a short `Tunn` lock for each, one endpoint update), not once per datagram; anything
    /// else goes through [`Crypto::open`], with `scratch` (at least `seg` bytes) as its buffer.
    pub fn open_run(
        &self,
        src: SocketAddr,
        (run, seg): (&mut [u8], usize),
        scratch: &mut [u8],
        send: &mut dyn FnMut(&[u8], SocketAddr),
        each: &mut dyn FnMut(SocketAddr, std::ops::Range<usize>),
    ) {
        /// The session the run's datagrams are opened with, and what they brought.
        struct Current<'t> {
            idx: u32,
            peer: &'t Arc<Peer>,
            session: Arc<Session>,
            bytes: usize,
            authenticated: bool,
        }
        let flush = |cur: &mut Option<Current>| {
            if let Some(c) = cur.take()
                && c.authenticated
            {
                lock(&c.peer.tunn).note_data_received(c.idx, c.bytes);
                c.peer.roamed(src);
            }
        };
        let table = self.table.load();
        let mut cur: Option<Current> = None;
        let mut opened = 0u64;
        let mut at = 0;
        for d in run.chunks_mut(seg.max(1)) {
            let start = at;
            at += d.len();
            // a transport data message (type 4, reserved bytes zero) with a session here
            let idx = match d.first_chunk::<8>() {
                Some(h) if d.len() >= OVERHEAD && h[..4] == [4, 0, 0, 0] => {
                    u32::from_le_bytes([h[4], h[5], h[6], h[7]])
                }
                _ => {
                    flush(&mut cur);
                    self.open_one(src, (d, start), scratch, send, each);
                    continue;
                }
            };
            if cur.as_ref().is_none_or(|c| c.idx != idx) {
                flush(&mut cur);
                let found = table.by_slot.get(&(idx >> 8)).and_then(|peer| {
                    let session = lock(&peer.tunn).receiving_session(idx)?;
                    Some((peer, session))
                });
                let Some((peer, session)) = found else {
                    // unknown index: Crypto::open says why (and nudges the sender)
                    self.open_one(src, (d, start), scratch, send, each);
                    continue;
                };
                cur = Some(Current {
                    idx,
                    peer,
                    session,
                    bytes: 0,
                    authenticated: false,
                });
            }
            let Some(c) = cur.as_mut() else { continue };
            let packet = match c.session.open_in_place(d) {
                Ok(packet) => packet,
                Err(_) => {
                    self.counters.drop(WgDrop::Rejected);
                    continue;
                }
            };
            c.authenticated = true;
            let len = match inner_packet(packet, c.peer.spec.address) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    // a keepalive (the initiator's first message on a new session): the
                    // session is confirmed, then what waited for it is sent
                    let peer = c.peer;
                    flush(&mut cur);
                    send_queued(&mut lock(&peer.tunn), src, send);
                    continue;
                }
                Err((why, _)) => {
                    self.counters.drop(why);
                    continue;
                }
            };
            c.bytes += len;
            match parse_inner(&packet[..len], self.address) {
                Ok((sport, range)) => {
                    opened += 1;
                    let from = SocketAddr::new(IpAddr::V4(c.peer.spec.address), sport);
                    let base = start + DATA_OFFSET;
                    each(from, base + range.start..base + range.end);
                }
                Err(why) => self.counters.drop(why),
            }
        }
        flush(&mut cur);
        if opened > 0 {
            self.counters.opened.fetch_add(opened, Relaxed);
        }
    }

    /// One datagram of a run through [`Crypto::open`]; a VXLAN datagram it opened into
    /// `scratch` is put back in the datagram's place (it is shorter than what carried it).
    fn open_one(
        &self,
        src: SocketAddr,
        (d, start): (&mut [u8], usize),
        scratch: &mut [u8],
        send: &mut dyn FnMut(&[u8], SocketAddr),
        each: &mut dyn FnMut(SocketAddr, std::ops::Range<usize>),
    ) {
        if let Opened::Vxlan { from, datagram } = self.open(src, d, scratch, send) {
            let n = datagram.len();
            d[..n].copy_from_slice(datagram);
            each(from, start..start + n);
        }
    }

    /// Transport data opened outside the peer's `Tunn` lock, which is taken only to fetch
    /// the session for the message's receiver index and to account for what was
    /// authenticated (as `Tunn::decapsulate` would). The packet's length (None: a keepalive),
    /// or why it is dropped. None when no session here has that receiver index: the caller
    /// goes through `Tunn::decapsulate`, which says why.
    #[allow(clippy::type_complexity)]
    fn open_data(
        &self,
        peer: &Peer,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<Result<Option<usize>, (WgDrop, WireGuardError)>> {
        let idx = u32::from_le_bytes(*datagram.get(4..8)?.first_chunk::<4>()?);
        let session = lock(&peer.tunn).receiving_session(idx)?;
        let packet = match session.open(datagram, out) {
            Ok(packet) => packet,
            Err(e) => return Some(Err((WgDrop::Rejected, e))),
        };
        let verdict = inner_packet(packet, peer.spec.address);
        let bytes = verdict.as_ref().map_or(0, |len| len.unwrap_or(0));
        lock(&peer.tunn).note_data_received(idx, bytes);
        Some(verdict)
    }

    /// The VXLAN datagram in a packet opened from `peer`, for the overlay.
    fn vxlan_in<'a>(&self, peer: &Peer, packet: &'a mut [u8]) -> Opened<'a> {
        match parse_inner(packet, self.address) {
            Ok((sport, range)) => {
                self.counters.opened.fetch_add(1, Relaxed);
                Opened::Vxlan {
                    from: SocketAddr::new(IpAddr::V4(peer.spec.address), sport),
                    datagram: &mut packet[range],
                }
            }
            Err(why) => {
                self.counters.drop(why);
                Opened::Drop(why)
            }
        }
    }

    /// A transport message for no session of ours came from `src`: if it is a peer's
    /// endpoint and we have no session with that peer, it kept one from before our restart,
    /// so we shake hands now rather than after its 15 s timeout. Unauthenticated, so it
    /// only ever starts a handshake that is not already under way (boringtun retries it).
    fn nudge(
        &self,
        table: &Table,
        src: SocketAddr,
        out: &mut [u8],
        send: &mut dyn FnMut(&[u8], SocketAddr),
    ) {
        let Some(peer) = table.peers.iter().find(|p| *lock(&p.endpoint) == src) else {
            return;
        };
        let mut tunn = lock(&peer.tunn);
        if Peer::has_session(&tunn) {
            return;
        }
        if let TunnResult::WriteToNetwork(msg) = tunn.format_handshake_initiation(out, false) {
            self.counters.sent(msg, false);
            self.counters.restarts_seen.fetch_add(1, Relaxed);
            self.counters.control_sent.fetch_add(1, Relaxed);
            send(msg, src);
        }
    }

    /// The peer a WireGuard message is for: a handshake initiation by the static key it
    /// carries (sealed to ours), anything else by the receiver index (the peer's slot
    /// shifted, as boringtun allocates it).
    fn peer_of<'t>(&self, table: &'t Table, datagram: &[u8]) -> Option<&'t Arc<Peer>> {
        let slot = match Tunn::parse_incoming_packet(datagram).ok()? {
            Packet::HandshakeInit(init) => {
                let keys = self.keys.load();
                let half = parse_handshake_anon(&keys.private, &keys.public, &init).ok()?;
                return table.by_key.get(&half.peer_static_public);
            }
            Packet::HandshakeResponse(r) => r.receiver_idx,
            Packet::PacketCookieReply(c) => c.receiver_idx,
            Packet::PacketData(d) => d.receiver_idx,
        };
        table.by_slot.get(&(slot >> 8))
    }

    /// Runs every session's timers (handshake retries, rekeys, keepalives); what they send
    /// goes through `send`. Call every 100-250 ms.
    pub fn tick(&self, out: &mut [u8], send: &mut dyn FnMut(&[u8], SocketAddr)) {
        {
            let mut last = lock(&self.gate_reset);
            if last.elapsed() >= std::time::Duration::from_secs(1) {
                self.gate.load().reset_count();
                *last = std::time::Instant::now();
            }
        }
        for peer in &self.table.load().peers {
            let endpoint = *lock(&peer.endpoint);
            let mut tunn = lock(&peer.tunn);
            let had_session = Peer::has_session(&tunn);
            if let TunnResult::WriteToNetwork(msg) = tunn.update_timers(out) {
                self.counters.sent(msg, had_session);
                send(msg, endpoint);
                self.counters.control_sent.fetch_add(1, Relaxed);
            }
        }
    }

    /// Each peer: its tunnel address, public key, endpoint, time since the last handshake
    /// and bytes sent and received in sessions.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.table
            .load()
            .peers
            .iter()
            .map(|p| {
                let (since, tx, rx, _, _) = lock(&p.tunn).stats();
                PeerStatus {
                    address: p.spec.address,
                    public_key: encode_key(&p.spec.public_key),
                    endpoint: *lock(&p.endpoint),
                    last_handshake: since,
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                }
            })
            .collect()
    }

    /// This host's public key.
    pub fn public_key(&self) -> String {
        encode_key(self.keys.load().public.as_bytes())
    }
}

/// One peer as `/v1/overlay` shows it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub address: Ipv4Addr,
    pub public_key: String,
    pub endpoint: SocketAddr,
    /// None: no session yet.
    pub last_handshake: Option<std::time::Duration>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

/// After a handshake: what waited in the session's queue for it goes now.
fn send_queued(tunn: &mut Tunn, to: SocketAddr, send: &mut dyn FnMut(&[u8], SocketAddr)) {
    let mut queued = vec![0u8; 65_600];
    while let TunnResult::WriteToNetwork(msg) = tunn.decapsulate(None, &[], &mut queued) {
        send(msg, to);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `Tunn::decapsulate` makes of an opened packet, for a peer whose tunnel address is
/// `peer`: None for a keepalive (empty), the IPv4 packet's length (its header's total length,
/// at most what was opened), or a drop: malformed (`Rejected`), IPv6 or another source than
/// the peer's tunnel address (`NotPeerSource`).
fn inner_packet(packet: &[u8], peer: Ipv4Addr) -> Result<Option<usize>, (WgDrop, WireGuardError)> {
    let invalid = (WgDrop::Rejected, WireGuardError::InvalidPacket);
    let not_peer = (WgDrop::NotPeerSource, WireGuardError::InvalidPacket);
    match packet.first().map(|v| v >> 4) {
        None => Ok(None),
        Some(4) if packet.len() >= 20 => {
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            if total > packet.len() {
                Err(invalid)
            } else if packet[12..16] != peer.octets() {
                Err(not_peer)
            } else {
                Ok(Some(total))
            }
        }
        Some(6) if packet.len() >= 40 => {
            let total = usize::from(u16::from_be_bytes([packet[4], packet[5]])) + 40;
            Err(if total > packet.len() {
                invalid
            } else {
                not_peer
            })
        }
        _ => Err(invalid),
    }
}

/// Writes an IPv4 header (no options, DF, TTL 64) and a UDP header without checksum (RFC
/// 7348 §5 allows 0 over IPv4) for `payload` bytes from `src:sport` to `dst:dport`.
pub fn write_inner(
    head: &mut [u8; INNER_HEADERS],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: usize,
) {
    let udp_len = (8 + payload) as u16;
    let total = 20 + udp_len;
    head[0] = 0x45;
    head[1] = 0;
    head[2..4].copy_from_slice(&total.to_be_bytes());
    head[4..6].copy_from_slice(&[0, 0]);
    head[6..8].copy_from_slice(&[0x40, 0]);
    head[8] = 64;
    head[9] = 17;
    head[10..12].copy_from_slice(&[0, 0]);
    head[12..16].copy_from_slice(&src.octets());
    head[16..20].copy_from_slice(&dst.octets());
    let sum = crate::wire::checksum::internet(&head[..20]);
    head[10..12].copy_from_slice(&sum.to_be_bytes());
    head[20..22].copy_from_slice(&sport.to_be_bytes());
    head[22..24].copy_from_slice(&dport.to_be_bytes());
    head[24..26].copy_from_slice(&udp_len.to_be_bytes());
    head[26..28].copy_from_slice(&[0, 0]);
}

/// The UDP source port and the VXLAN datagram's range in an inner IPv4 packet addressed to
/// `me`, UDP port 4789 (IPv4 options allowed; fragments are not VXLAN here).
pub fn parse_inner(packet: &[u8], me: Ipv4Addr) -> Result<(u16, std::ops::Range<usize>), WgDrop> {
    let bad = Err(WgDrop::NotVxlan);
    let Some(&vihl) = packet.first() else {
        return bad;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || packet.len() < ihl + 8 {
        return bad;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let frag = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff;
    if packet[9] != 17 || frag != 0 || total < ihl + 8 || total > packet.len() {
        return bad;
    }
    if packet[16..20] != me.octets() {
        return bad;
    }
    let udp = &packet[ihl..total];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if dport != VXLAN_PORT || udp_len < 8 || udp_len > udp.len() {
        return bad;
    }
    Ok((sport, ihl + 8..ihl + udp_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with key `private` and tunnel address `me`, whose one peer has `peer`'s key,
    /// endpoint `endpoint` and tunnel address `peer_at`.
    fn host(
        private: Key,
        me: [u8; 4],
        peer: Key,
        endpoint: SocketAddr,
        peer_at: [u8; 4],
    ) -> Crypto {
        Crypto::new(&WgSpec {
            listen: "127.0.0.1:0".parse().expect("addr"),
            address: me.into(),
            private_key: private,
            allow_plaintext: false,
            peers: vec![PeerSpec {
                public_key: public_key(&peer),
                endpoint,
                address: peer_at.into(),
            }],
        })
    }

    #[test]
    fn keys_round_trip_as_wg_writes_them() {
        // a pair from `wg genkey | tee k | wg pubkey` (wireguard-tools)
        let private = parse_key("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").expect("key");
        assert_eq!(
            encode_key(&public_key(&private)),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
        assert_eq!(parse_key("  c2hvcnQ= \n"), None, "not 32 bytes");
        assert_eq!(parse_key("not base64!"), None);
        let k = generate_key().expect("random");
        assert_eq!(parse_key(&encode_key(&k)), Some(k));
        assert_eq!((k[0] & 7, k[31] & 0xc0), (0, 64), "clamped");
    }

    #[test]
    fn the_inner_headers_parse_back_and_others_are_not_vxlan() {
        let (a, b) = (Ipv4Addr::new(10, 250, 0, 1), Ipv4Addr::new(10, 250, 0, 2));
        let mut p = vec![0u8; INNER_HEADERS + 50];
        let head = p.first_chunk_mut::<INNER_HEADERS>().expect("room");
        write_inner(head, a, b, 40000, VXLAN_PORT, 50);
        assert_eq!(
            crate::wire::checksum::internet(&p[..20]),
            0,
            "header checksum"
        );
        assert_eq!(parse_inner(&p, b), Ok((40000, 28..78)));
        assert_eq!(parse_inner(&p, a), Err(WgDrop::NotVxlan), "not to us");
        p[22..24].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(parse_inner(&p, b), Err(WgDrop::NotVxlan), "another port");
        for cut in 0..28 {
            assert_eq!(
                parse_inner(&p[..cut], b),
                Err(WgDrop::NotVxlan),
                "{cut} bytes"
            );
        }
    }

    /// Two hosts in memory: a datagram sealed on one is a handshake first, then opens on
    /// the other as the same VXLAN datagram from the sender's tunnel address; a replay and a
    /// flipped byte are refused; a third key is nobody's peer.
    #[test]
    fn two_peers_handshake_and_carry_vxlan_both_ways() {
        let (ka, kb, kc) = (
            generate_key().expect("k"),
            generate_key().expect("k"),
            generate_key().expect("k"),
        );
        let (ea, eb): (SocketAddr, SocketAddr) = (
            "192.0.2.1:51820".parse().expect("a"),
            "192.0.2.2:51820".parse().expect("a"),
        );
        let a = host(ka, [10, 250, 0, 1], kb, eb, [10, 250, 0, 2]);
        let b = host(kb, [10, 250, 0, 2], ka, ea, [10, 250, 0, 1]);
        let to_b: SocketAddr = "10.250.0.2:4789".parse().expect("a");
        let vxlan = b"\x08\x00\x00\x00\x00\x00\x2a\x00hello frame";
        let mut packet = vec![0u8; INNER_HEADERS];
        packet.extend_from_slice(vxlan);
        let mut out = vec![0u8; 2048];
        // a -> b: no session yet, so a handshake initiation goes out, the datagram queued
        let Sealed::Send(init, dst) = a.seal(to_b, 40000, &mut packet, &mut out) else {
            panic!("no initiation")
        };
        assert_eq!(dst, eb);
        let init = init.to_vec();
        let mut out_b = vec![0u8; 2048];
        let mut to_a = Vec::new();
        let got = b.open(ea, &init, &mut out_b, &mut |m, d| {
            to_a.push((m.to_vec(), d))
        });
        assert!(matches!(got, Opened::Nothing), "{got:?}");
        assert_eq!(to_a.len(), 1, "b answers the handshake");
        // a gets the response; its queued datagram goes now
        let mut to_b_msgs = Vec::new();
        let got = a.open(eb, &to_a[0].0, &mut out, &mut |m, d| {
            to_b_msgs.push((m.to_vec(), d))
        });
        assert!(matches!(got, Opened::Nothing));
        assert_eq!(
            to_b_msgs.len(),
            2,
            "a keepalive (it confirms the session), then the queued datagram"
        );
        let got = b.open(ea, &to_b_msgs[0].0, &mut out_b, &mut |_, _| {});
        assert!(matches!(got, Opened::Nothing), "the keepalive: {got:?}");
        let sealed = to_b_msgs[1].0.clone();
        assert!(
            !sealed.windows(5).any(|w| w == b"hello"),
            "sealed, not readable"
        );
        match b.open(ea, &sealed, &mut out_b, &mut |_, _| {
            panic!("nothing to send")
        }) {
            Opened::Vxlan { from, datagram } => {
                assert_eq!(from, "10.250.0.1:40000".parse::<SocketAddr>().expect("a"));
                assert_eq!(&datagram[..], vxlan);
            }
            other => panic!("{other:?}"),
        }
        // a replay is refused
        let again = b.open(ea, &sealed, &mut out_b, &mut |_, _| {});
        assert!(matches!(again, Opened::Drop(WgDrop::Rejected)), "{again:?}");
        // a flipped byte is refused
        let mut forged = sealed.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let got = b.open(ea, &forged, &mut out_b, &mut |_, _| {});
        assert!(matches!(got, Opened::Drop(WgDrop::Rejected)), "{got:?}");
        // b -> a now has a session: a transport message at once
        let mut back = vec![0u8; INNER_HEADERS];
        back.extend_from_slice(vxlan);
        let Sealed::Send(msg, dst) = b.seal(
            "10.250.0.1:4789".parse().expect("a"),
            41000,
            &mut back,
            &mut out_b,
        ) else {
            panic!("no transport message")
        };
        assert_eq!(dst, ea);
        let msg = msg.to_vec();
        assert!(matches!(
            a.open(eb, &msg, &mut out, &mut |_, _| {}),
            Opened::Vxlan { .. }
        ));
        // a stranger's initiation is nobody's
        let c = host(kc, [10, 250, 0, 3], kb, eb, [10, 250, 0, 2]);
        let mut p3 = vec![0u8; INNER_HEADERS + 4];
        let Sealed::Send(init3, _) = c.seal(to_b, 1, &mut p3, &mut out) else {
            panic!("no initiation")
        };
        let init3 = init3.to_vec();
        let got = b.open(
            "192.0.2.3:51820".parse().expect("a"),
            &init3,
            &mut out_b,
            &mut |_, _| panic!("answered a stranger"),
        );
        assert!(matches!(got, Opened::Drop(WgDrop::UnknownPeer)), "{got:?}");
        assert_eq!(b.counters.unknown_peer.load(Relaxed), 1);
        assert_eq!(b.counters.rejected.load(Relaxed), 2);
        assert!(a.is_peer(to_b) && !a.is_peer("10.250.0.9:4789".parse().expect("a")));
    }

    /// Two hosts that are each other's peer: keys, WireGuard endpoints, tunnel addresses
    /// 10.250.0.1 (a) and 10.250.0.2 (b).
    struct Pair {
        ka: Key,
        kb: Key,
        ea: SocketAddr,
        eb: SocketAddr,
        a: Crypto,
        b: Crypto,
    }

    fn pair() -> Pair {
        let (ka, kb) = (generate_key().expect("k"), generate_key().expect("k"));
        let (ea, eb): (SocketAddr, SocketAddr) = (
            "192.0.2.1:51820".parse().expect("a"),
            "192.0.2.2:51820".parse().expect("a"),
        );
        Pair {
            a: host(ka, [10, 250, 0, 1], kb, eb, [10, 250, 0, 2]),
            b: host(kb, [10, 250, 0, 2], ka, ea, [10, 250, 0, 1]),
            ka,
            kb,
            ea,
            eb,
        }
    }

    /// `full` segments of `stride` bytes and one of `last`, each behind the inner headers'
    /// room, segment i's payload filled with i + 1.
    fn numbered(full: usize, stride: usize, last: usize) -> Vec<u8> {
        let mut data = vec![0u8; full * stride + last];
        for (i, seg) in data.chunks_mut(stride).enumerate() {
            seg[INNER_HEADERS..].fill(i as u8 + 1);
        }
        data
    }

    /// `data`'s segments (every `stride` bytes, the last maybe shorter) laid out for sealing
    /// in place, with room for WireGuard's header before each and its tag after; the stride.
    fn with_room(data: &[u8], stride: usize) -> (Vec<u8>, usize) {
        let mut v = Vec::new();
        for seg in data.chunks(stride) {
            v.extend_from_slice(&[0u8; DATA_OFFSET]);
            v.extend_from_slice(seg);
            v.extend_from_slice(&[0u8; TAG_LEN]);
        }
        (v, stride + OVERHEAD)
    }

    /// Two hosts on a wire in memory: delivers every message until none is left, and
    /// returns the VXLAN datagrams each side opened (a's, b's).
    struct Wire<'h> {
        a: (&'h Crypto, SocketAddr),
        b: (&'h Crypto, SocketAddr),
    }

    type Msgs = Vec<(Vec<u8>, SocketAddr)>;

    impl Wire<'_> {
        fn run(&self, mut in_flight: Msgs) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
            let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
            let mut out = vec![0u8; 65_600];
            for _ in 0..100 {
                let Some((msg, to)) = in_flight.pop() else {
                    return (got_a, got_b);
                };
                let (host, from, got) = if to == self.a.1 {
                    (self.a.0, self.b.1, &mut got_a)
                } else {
                    (self.b.0, self.a.1, &mut got_b)
                };
                let mut replies = Vec::new();
                if let Opened::Vxlan { datagram, .. } =
                    host.open(from, &msg, &mut out, &mut |m, d| {
                        replies.push((m.to_vec(), d))
                    })
                {
                    got.push(datagram.to_vec());
                }
                in_flight.extend(replies);
            }
            panic!("the hosts never went quiet")
        }

        /// Seals `payload` on `from` for the other host; what goes out.
        fn send(&self, from: &Crypto, payload: &[u8]) -> Msgs {
            let to = if std::ptr::eq(from, self.a.0) {
                self.b.0
            } else {
                self.a.0
            };
            let mut packet = vec![0u8; INNER_HEADERS];
            packet.extend_from_slice(payload);
            let mut out = vec![0u8; 65_600];
            let vtep = SocketAddr::new(IpAddr::V4(to.address()), VXLAN_PORT);
            match from.seal(vtep, 40000, &mut packet, &mut out) {
                Sealed::Send(m, d) => vec![(m.to_vec(), d)],
                other => panic!("{other:?}"),
            }
        }
    }

    /// A host that restarts (new sessions, same key) is reached again at the peer's next
    /// datagram: the stale transport message makes it shake hands at once, instead of the
    /// peer's 15 s timeout; the restart is counted.
    #[test]
    fn a_restarted_peer_shakes_hands_at_the_first_stale_datagram() {
        let Pair {
            ka,
            kb,
            ea,
            eb,
            a,
            b,
        } = pair();
        let frame = b"\x08\x00\x00\x00\x00\x00\x2a\x00payload".to_vec();
        let w = Wire {
            a: (&a, ea),
            b: (&b, eb),
        };
        let (_, got_b) = w.run(w.send(&a, &frame));
        assert_eq!(got_b, std::slice::from_ref(&frame), "first session");
        // b restarts: same key, no sessions
        let b2 = host(kb, [10, 250, 0, 2], ka, ea, [10, 250, 0, 1]);
        let w = Wire {
            a: (&a, ea),
            b: (&b2, eb),
        };
        let (_, got_b) = w.run(w.send(&a, &frame));
        assert!(got_b.is_empty(), "the stale datagram opens nothing");
        assert_eq!(b2.counters.restarts_seen.load(Relaxed), 1);
        assert_eq!(b2.counters.handshakes.load(Relaxed), 1, "b2 shook hands");
        let (_, got_b) = w.run(w.send(&a, &frame));
        assert_eq!(got_b, [frame], "the next datagram arrives");
        // a peer with a session is not nudged by a stranger's stale-looking datagram
        let stale = w.send(&a, b"x");
        let mut forged = stale[0].0.clone();
        forged[4] ^= 0xff; // another receiver index
        let before = b2.counters.initiations.load(Relaxed);
        w.run(vec![(forged, eb)]);
        assert_eq!(b2.counters.initiations.load(Relaxed), before);
    }

    /// Peers come and go without touching the others' sessions; a key change ends every
    /// session and the peer that learns the new key is reached again.
    #[test]
    fn peers_change_live_and_a_new_key_shakes_hands_again() {
        let Pair {
            kb, ea, eb, a, b, ..
        } = pair();
        let frame = b"\x08\x00\x00\x00\x00\x00\x2a\x00payload".to_vec();
        let w = Wire {
            a: (&a, ea),
            b: (&b, eb),
        };
        w.run(w.send(&a, &frame));
        let up = a.counters.handshakes.load(Relaxed);
        // a third peer joins a's table, and one that clashes is refused
        let kc = generate_key().expect("k");
        let b_spec = PeerSpec {
            public_key: public_key(&kb),
            endpoint: eb,
            address: [10, 250, 0, 2].into(),
        };
        let c_spec = PeerSpec {
            public_key: public_key(&kc),
            endpoint: "192.0.2.3:51820".parse().expect("a"),
            address: [10, 250, 0, 3].into(),
        };
        let clash = PeerSpec {
            public_key: public_key(&generate_key().expect("k")),
            ..c_spec.clone()
        };
        let refused = a.set_peers(&[b_spec.clone(), c_spec.clone(), clash]);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(a.peers().len(), 2);
        let (_, got_b) = w.run(w.send(&a, &frame));
        assert_eq!(got_b, std::slice::from_ref(&frame), "b's session kept");
        assert_eq!(a.counters.handshakes.load(Relaxed), up, "no new handshake");
        // b rotates its key; a learns the new one
        let kb2 = generate_key().expect("k");
        assert!(b.set_private_key(&kb2));
        assert!(!b.set_private_key(&kb2), "the same key is no change");
        assert_eq!(*b.subscribe_public_key().borrow(), public_key(&kb2));
        a.set_peers(&[
            PeerSpec {
                public_key: public_key(&kb2),
                ..b_spec
            },
            c_spec,
        ]);
        let sent = w.send(&a, &frame);
        assert_eq!(sent[0].0[0], 1, "a new peer key: an initiation first");
        let (_, got_b) = w.run(sent);
        assert_eq!(
            got_b,
            std::slice::from_ref(&frame),
            "queued, sent after the new handshake"
        );
        assert_eq!(a.counters.handshakes.load(Relaxed), up + 1);
        let (got_a, _) = w.run(w.send(&b, &frame));
        assert_eq!(got_a, [frame], "and back");
    }

    /// The segments of a TSO frame, sealed in one call, lie back to back each OVERHEAD
    /// bytes longer (one GSO send) and open on the peer as the same datagrams, in order;
    /// before a session the first one's initiation goes through `control`.
    #[test]
    fn segments_seal_back_to_back_and_open_in_order() {
        let Pair { ea, eb, a, b, .. } = pair();
        let w = Wire {
            a: (&a, ea),
            b: (&b, eb),
        };
        let to_b: SocketAddr = "10.250.0.2:4789".parse().expect("a");
        // 3 segments of stride 200 (the last 120), each behind the inner headers' room
        let (stride, last) = (200, 120);
        let data = numbered(2, stride, last);
        let mut out = vec![0u8; 4096];
        let mut control = Vec::new();
        let (mut msgs, st) = with_room(&data, stride);
        let (endpoint, len) = a
            .seal_segments(
                to_b,
                40000,
                (&mut msgs.clone(), st),
                &mut out,
                &mut |m, d| control.push((m.to_vec(), d)),
            )
            .expect("a peer");
        assert_eq!(
            (endpoint, len, control.len()),
            (eb, 0, 1),
            "no session: an initiation"
        );
        let (_, got) = w.run(control);
        assert_eq!(got.len(), 3, "the queued segments went after the handshake");
        let (endpoint, len) = a
            .seal_segments(to_b, 40000, (&mut msgs, st), &mut out, &mut |_, _| {
                panic!("a session is up")
            })
            .expect("a peer");
        assert_eq!(
            (endpoint, len),
            (eb, 2 * (stride + OVERHEAD) + last + OVERHEAD),
            "every message sealed where it lay"
        );
        let msgs: Msgs = msgs[..len]
            .chunks(st)
            .map(|m| (m.to_vec(), eb))
            .rev() // Wire::run pops from the end
            .collect();
        let (_, got) = w.run(msgs);
        let want: Vec<Vec<u8>> = data
            .chunks(stride)
            .map(|seg| seg[INNER_HEADERS..].to_vec())
            .collect();
        assert_eq!(got, want);
        assert!(
            a.seal_segments(
                "10.250.0.9:4789".parse().expect("a"),
                1,
                (&mut [0u8; 64], 64),
                &mut out,
                &mut |_, _| {}
            )
            .is_none(),
            "no peer"
        );
    }

    /// A GRO run of sealed datagrams is opened where it lies: each VXLAN datagram once, by
    /// its place in the run, the session fetched and the bytes accounted for the run; a
    /// replay and a tampered datagram in the middle are dropped and counted, the ones after
    /// them still opened; a handshake message in a run goes through `open` (answered).
    #[test]
    fn a_run_opens_in_place_and_drops_what_fails() {
        let Pair { ea, eb, a, b, .. } = pair();
        let w = Wire {
            a: (&a, ea),
            b: (&b, eb),
        };
        let to_b: SocketAddr = "10.250.0.2:4789".parse().expect("a");
        let (stride, last) = (200, 120);
        let data = numbered(3, stride, last);
        let mut out = vec![0u8; 4096];
        let mut control = Vec::new();
        let (mut msgs, seg) = with_room(&data, stride);
        a.seal_segments(
            to_b,
            40000,
            (&mut msgs.clone(), seg),
            &mut out,
            &mut |m, d| control.push((m.to_vec(), d)),
        );
        let (_, got) = w.run(control);
        assert_eq!(got.len(), 4, "the queued segments went after the handshake");
        let (rx0, opened0) = (b.peers()[0].rx_bytes, b.counters.opened.load(Relaxed));
        let (_, len) = a
            .seal_segments(to_b, 40000, (&mut msgs, seg), &mut out, &mut |_, _| {
                panic!("a session is up")
            })
            .expect("a peer");
        let sealed: Vec<&[u8]> = msgs[..len].chunks(seg).collect();
        // the run: s0, s1, s0 again (a replay), s2 with a flipped byte, s3 (the short one)
        let mut tampered = sealed[2].to_vec();
        tampered[DATA_OFFSET + 30] ^= 1;
        let run_parts: [&[u8]; 5] = [sealed[0], sealed[1], sealed[0], &tampered, sealed[3]];
        let mut run: Vec<u8> = run_parts.concat();
        let rejected0 = b.counters.rejected.load(Relaxed);
        let mut got = Vec::new();
        let mut scratch = vec![0u8; 2048];
        b.open_run(
            ea,
            (&mut run, seg),
            &mut scratch,
            &mut |_, _| panic!("nothing to answer"),
            &mut |from, r| got.push((from, r)),
        );
        let want_ranges: Vec<std::ops::Range<usize>> = [0, 1, 4]
            .iter()
            .map(|&i| {
                let start = i * seg + DATA_OFFSET + INNER_HEADERS;
                let n = if i == 4 { last } else { stride } - INNER_HEADERS;
                start..start + n
            })
            .collect();
        assert_eq!(
            got.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            want_ranges
        );
        for ((from, r), fill) in got.iter().zip([1u8, 2, 4]) {
            assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(10, 250, 0, 1)));
            assert_eq!(from.port(), 40000);
            assert!(run[r.clone()].iter().all(|&c| c == fill), "segment {fill}");
        }
        assert_eq!(b.counters.rejected.load(Relaxed) - rejected0, 2);
        assert_eq!(b.counters.opened.load(Relaxed) - opened0, 3);
        let inner = (2 * stride + last) as u64;
        assert_eq!(
            b.peers()[0].rx_bytes - rx0,
            inner,
            "the run's inner packets"
        );
        // a handshake initiation in a run goes through `open`: answered, nothing delivered
        let fresh = pair();
        let mut control = Vec::new();
        fresh.a.seal_segments(
            to_b,
            40000,
            (&mut vec![0u8; stride + OVERHEAD], stride + OVERHEAD),
            &mut out,
            &mut |m, d| control.push((m.to_vec(), d)),
        );
        let mut init = control.pop().expect("an initiation").0;
        assert_eq!(init[0], 1);
        let mut answers = Vec::new();
        let n = init.len();
        fresh.b.open_run(
            fresh.ea,
            (&mut init, n),
            &mut scratch,
            &mut |m, d| answers.push((m[0], d)),
            &mut |_, _| panic!("a handshake is no VXLAN datagram"),
        );
        assert_eq!(answers, [(2, fresh.ea)], "the response");
    }

    /// Queue threads seal for one peer at once (outside its lock): every nonce is used once,
    /// so the peer, opening on two threads as well, gets every segment exactly once (a
    /// nonce sealed twice would be refused as a replay); both sides count the bytes.
    #[test]
    fn threads_seal_and_open_for_one_peer_at_once() {
        let Pair { ea, eb, a, b, .. } = pair();
        let w = Wire {
            a: (&a, ea),
            b: (&b, eb),
        };
        let (_, got) = w.run(w.send(&a, b"\x08\x00\x00\x00\x00\x00\x2a\x00up"));
        assert_eq!(got.len(), 1, "the session is up");
        let to_b: SocketAddr = "10.250.0.2:4789".parse().expect("a");
        let (threads, frames, stride) = (4usize, 200usize, 300usize);
        // each thread seals `frames` super-frames of 8 segments, each segment's payload
        // naming the thread, frame and segment
        let sealed: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let a = &a;
                    s.spawn(move || {
                        let mut msgs = Vec::new();
                        let mut out = vec![0u8; 8 * (stride + OVERHEAD) + 148];
                        for f in 0..frames {
                            let mut data = vec![0u8; 8 * stride];
                            for (i, seg) in data.chunks_mut(stride).enumerate() {
                                let tag = format!("t{t} f{f} s{i}");
                                seg[INNER_HEADERS..INNER_HEADERS + tag.len()]
                                    .copy_from_slice(tag.as_bytes());
                            }
                            let (mut room, st) = with_room(&data, stride);
                            let (_, len) = a
                                .seal_segments(
                                    to_b,
                                    40000,
                                    (&mut room, st),
                                    &mut out,
                                    &mut |_, _| panic!("a session is up"),
                                )
                                .expect("a peer");
                            assert_eq!(len, 8 * st);
                            msgs.extend(room[..len].chunks(st).map(<[u8]>::to_vec));
                        }
                        msgs
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("sealer"))
                .collect()
        });
        let mut all: Vec<Vec<u8>> = sealed.into_iter().flatten().collect();
        assert_eq!(all.len(), threads * frames * 8);
        let counter = |m: &Vec<u8>| u64::from_le_bytes(m[8..16].try_into().expect("counter"));
        all.sort_by_key(counter);
        let mut counters: Vec<u64> = all.iter().map(counter).collect();
        counters.dedup();
        assert_eq!(counters.len(), all.len(), "a nonce used twice");
        // b opens them on two threads (alternate messages), in rounds of 512 so that neither
        // falls more than the replay window (1024) behind the other
        let round = std::sync::Barrier::new(2);
        let opened: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|k| {
                    let (b, all, round) = (&b, &all, &round);
                    s.spawn(move || {
                        let mut out = vec![0u8; 2048];
                        let mut got = Vec::new();
                        for chunk in all.chunks(512) {
                            for m in chunk.iter().skip(k).step_by(2) {
                                match b.open(ea, m, &mut out, &mut |_, _| {}) {
                                    Opened::Vxlan { datagram, .. } => {
                                        let end = datagram.iter().position(|&c| c == 0);
                                        let tag = &datagram[..end.unwrap_or(datagram.len())];
                                        got.push(String::from_utf8_lossy(tag).into_owned());
                                    }
                                    other => panic!("{other:?}"),
                                }
                            }
                            round.wait();
                        }
                        got
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("opener"))
                .collect()
        });
        let mut unique = opened.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), threads * frames * 8, "every segment once");
        assert_eq!(b.counters.opened.load(Relaxed), 1 + all.len() as u64);
        let (ta, tb) = (&a.peers()[0], &b.peers()[0]);
        let bytes = (all.len() * stride) as u64; // each segment's inner IPv4 packet
        assert!(ta.tx_bytes >= bytes, "a counted {} sent", ta.tx_bytes);
        assert!(tb.rx_bytes >= bytes, "b counted {} received", tb.rx_bytes);
        // the same messages again: every one a replay
        let mut out = vec![0u8; 2048];
        for m in all.iter().rev().take(10) {
            assert!(matches!(
                b.open(ea, m, &mut out, &mut |_, _| {}),
                Opened::Drop(WgDrop::Rejected)
            ));
        }
    }

    /// A peer's authenticated packet whose inner source is not the peer's tunnel address
    /// (here: a host that believes it is 10.250.0.7, known to b as 10.250.0.1) is dropped
    /// and counted, on b's first packet of a session (handshake path) and after.
    #[test]
    fn a_peer_sending_from_another_tunnel_address_is_dropped() {
        let (ka, kb) = (generate_key().expect("k"), generate_key().expect("k"));
        let (ea, eb): (SocketAddr, SocketAddr) = (
            "192.0.2.1:51820".parse().expect("a"),
            "192.0.2.2:51820".parse().expect("a"),
        );
        let a = host(ka, [10, 250, 0, 7], kb, eb, [10, 250, 0, 2]);
        let b = host(kb, [10, 250, 0, 2], ka, ea, [10, 250, 0, 1]);
        let w = Wire {
            a: (&a, ea),
            b: (&b, eb),
        };
        let frame = b"\x08\x00\x00\x00\x00\x00\x2a\x00payload";
        let (_, got) = w.run(w.send(&a, frame));
        assert!(got.is_empty());
        let first = b.counters.not_peer_source.load(Relaxed);
        assert_eq!(first, 1, "the queued datagram after the handshake");
        let (_, got) = w.run(w.send(&a, frame));
        assert!(got.is_empty());
        assert_eq!(b.counters.not_peer_source.load(Relaxed), 2);
        assert_eq!(b.counters.opened.load(Relaxed), 0);
    }

    /// What an opened packet is: as `Tunn::decapsulate` judges it.
    #[test]
    fn opened_packets_are_judged_as_boringtun_does() {
        let peer = Ipv4Addr::new(10, 250, 0, 1);
        let mut v4 = [0u8; 40];
        write_inner(
            v4.first_chunk_mut().expect("room"),
            peer,
            Ipv4Addr::new(10, 250, 0, 2),
            1,
            4789,
            12,
        );
        assert_eq!(inner_packet(&v4, peer).map_err(|e| e.0), Ok(Some(40)));
        assert_eq!(
            inner_packet(&[], peer).map_err(|e| e.0),
            Ok(None),
            "keepalive"
        );
        assert_eq!(
            inner_packet(&v4, Ipv4Addr::new(10, 250, 0, 9)).map_err(|e| e.0),
            Err(WgDrop::NotPeerSource)
        );
        assert_eq!(
            inner_packet(&v4[..39], peer).map_err(|e| e.0),
            Err(WgDrop::Rejected),
            "shorter than its total length"
        );
        assert_eq!(
            inner_packet(&v4[..19], peer).map_err(|e| e.0),
            Err(WgDrop::Rejected)
        );
        let mut v6 = [0u8; 48];
        v6[0] = 0x60;
        v6[5] = 8;
        assert_eq!(
            inner_packet(&v6, peer).map_err(|e| e.0),
            Err(WgDrop::NotPeerSource)
        );
        v6[5] = 9;
        assert_eq!(
            inner_packet(&v6, peer).map_err(|e| e.0),
            Err(WgDrop::Rejected)
        );
        assert_eq!(
            inner_packet(&[0x50; 40], peer).map_err(|e| e.0),
            Err(WgDrop::Rejected)
        );
    }

    /// A flood of handshake initiations (valid mac1: the sender knows our public key) costs
    /// a Diffie-Hellman only up to the rate; beyond it each gets a cookie reply, without;
    /// garbage that fails mac1 never gets that far.
    #[test]
    fn a_flood_of_initiations_is_answered_with_cookies() {
        let kb = generate_key().expect("k");
        let eb: SocketAddr = "192.0.2.2:51820".parse().expect("a");
        let b = host(
            kb,
            [10, 250, 0, 2],
            generate_key().expect("k"),
            "192.0.2.1:51820".parse().expect("a"),
            [10, 250, 0, 1],
        );
        let to_b: SocketAddr = "10.250.0.2:4789".parse().expect("a");
        let mut out = vec![0u8; 2048];
        let mut cookies = 0;
        for i in 0..150u8 {
            // a stranger that knows b's public key
            let s = host(
                generate_key().expect("k"),
                [10, 250, 1, i],
                kb,
                eb,
                [10, 250, 0, 2],
            );
            let mut p = vec![0u8; INNER_HEADERS + 4];
            let Sealed::Send(init, _) = s.seal(to_b, 1, &mut p, &mut out) else {
                panic!("no initiation")
            };
            let init = init.to_vec();
            let mut replies = Vec::new();
            b.open(
                SocketAddr::from(([192, 0, 2, 100], 40000)),
                &init,
                &mut vec![0u8; 2048],
                &mut |m, _| replies.push(m[0]),
            );
            cookies += replies.iter().filter(|t| **t == 3).count();
        }
        assert_eq!(cookies, 50, "cookie replies beyond 100 handshakes");
        assert_eq!(b.counters.cookies_sent.load(Relaxed), 50);
        assert_eq!(
            b.counters.unknown_peer.load(Relaxed),
            100,
            "strangers, after DH"
        );
        let mut garbage = vec![1u8, 0, 0, 0];
        garbage.extend_from_slice(&[7u8; 144]);
        let got = b.open(eb, &garbage, &mut out, &mut |_, _| {
            panic!("answered garbage")
        });
        assert!(matches!(got, Opened::Drop(WgDrop::Rejected)), "{got:?}");
    }
}
