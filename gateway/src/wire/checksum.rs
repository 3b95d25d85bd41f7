//! The Internet checksum (RFC 1071): one's-complement sums, folded; pure arithmetic (the
//! repair of partial checksums in frames is `wire::partial`).

/// One's-complement sum of `data` (as big-endian 16-bit words, the first at offset 0) added
/// to `sum`, not folded. The bulk is summed as native little-endian 32-bit words into a
/// 64-bit accumulator, which vectorises, then folded and byte-swapped: the one's-complement
/// sum does not depend on byte order or word width (RFC 1071 §2(A), (B)).
pub fn add(sum: u64, data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut sum = sum + u64::from(fold(acc).swap_bytes());
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for c in &mut pairs {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum from [`add`] to 16 bits (not complemented).
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The RFC 1071 checksum of `data` (complemented, ready to store).
pub fn internet(data: &[u8]) -> u16 {
    !fold(add(0, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast sum agrees with the textbook one (16-bit big-endian words) for every length
    /// and content, including odd lengths and carries.
    #[test]
    fn fast_sum_matches_the_definition() {
        fn slow(data: &[u8]) -> u16 {
            let mut s: u64 = 0;
            for c in data.chunks(2) {
                s += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            fold(s)
        }
        let mut x: u32 = 12345;
        let data: Vec<u8> = (0..3000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        for len in 0..200 {
            assert_eq!(fold(add(0, &data[..len])), slow(&data[..len]), "len {len}");
        }
        assert_eq!(fold(add(0, &data)), slow(&data));
        let ones = vec![0xffu8; 4001];
        assert_eq!(fold(add(7, &ones)), fold(7 + u64::from(slow(&ones))));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2; the checksum is its complement
        assert_eq!(
            internet(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }
}
