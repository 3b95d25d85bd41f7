//! WireGuard's receive path (issue 29): arbitrary datagrams to a host with one peer, the same
//! bytes as a GRO run, and arbitrary messages through an established session. Nothing
//! panics; nothing unauthenticated becomes a VXLAN datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::OnceLock;
use vxgate::overlay::wg::{Crypto, INNER_HEADERS, Opened, PeerSpec, Sealed, WgSpec, public_key};

const KA: [u8; 32] = [0x18; 32];
const KB: [u8; 32] = [0x28; 32];

fn host(me: [u8; 32], peer: [u8; 32], addr: [u8; 4], peer_addr: [u8; 4], ep: &str) -> Crypto {
    Crypto::new(&WgSpec {
        listen: "127.0.0.1:0".parse().expect("addr"),
        address: addr.into(),
        private_key: me,
        allow_plaintext: false,
        peers: vec![PeerSpec {
            public_key: public_key(&peer),
            endpoint: ep.parse().expect("endpoint"),
            address: peer_addr.into(),
        }],
    })
}

fuzz_target!(|data: &[u8]| {
    static B: OnceLock<Crypto> = OnceLock::new();
    let b = B.get_or_init(|| host(KB, KA, [10, 250, 0, 2], [10, 250, 0, 1], "192.0.2.1:51820"));
    let src: SocketAddr = "192.0.2.1:51820".parse().expect("src");
    let mut out = vec![0u8; 70_000];
    match b.open(src, data, &mut out, &mut |_, _| {}) {
        Opened::Vxlan { .. } => panic!("an unauthenticated datagram opened"),
        Opened::Nothing | Opened::Drop(_) => {}
    }
    // the same bytes as one GRO read, cut into datagrams of a size the input picks
    let seg = usize::from(data.first().copied().unwrap_or(1)).max(1) * 8;
    let mut run = data.to_vec();
    b.open_run(
        src,
        (&mut run, seg),
        &mut out,
        &mut |_, _| {},
        &mut |_, _| panic!("an unauthenticated datagram opened in a run"),
    );
    // a well-formed first message too: whatever follows it must not panic either
    let a = host(KA, KB, [10, 250, 0, 1], [10, 250, 0, 2], "192.0.2.2:51820");
    let mut p = vec![0u8; INNER_HEADERS];
    p.extend_from_slice(data);
    let mut sealed = vec![0u8; p.len() + 200];
    if let Sealed::Send(msg, _) = a.seal(
        "10.250.0.2:4789".parse().expect("to"),
        1,
        &mut p,
        &mut sealed,
    ) {
        let msg = msg.to_vec();
        let _ = b.open(src, &msg, &mut out, &mut |_, _| {});
    }
});
