//! Partitioning: `FNV-1a-32(id) mod P`, the same function as the broker's
//! `{{partition(P,1)}}` subject transform, so clients and the gateway can compute it too.

/// The default partition count of a deployment.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// FNV-1a, 32 bit.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(PRIME)
    })
}

/// The partition in `0..partitions` that owns `id`.
pub fn partition_of(id: &str, partitions: u32) -> u32 {
    debug_assert!(partitions > 0, "partition count must be positive");
    fnv1a_32(id.as_bytes()) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_fnv1a_vectors() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partitions_stay_in_range() {
        for i in 0..1000 {
            assert!(partition_of(&format!("station-{i}"), 64) < 64);
        }
    }
}
