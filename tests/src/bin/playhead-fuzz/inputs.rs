//! Inputs: valid seeds mutated a few times, or random bytes.

use rand::Rng;
use rand::rngs::StdRng;

/// Longest input made (the node refuses inbox messages above 64 KiB before decoding them; a
/// little more exercises that refusal too).
pub const MAX_INPUT: usize = 80 * 1024;

/// Fragments that stress parsers when spliced in.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b":",
    b",",
    b"null",
    b"true",
    b"-0",
    b"1e999",
    b"-1e-999",
    b"18446744073709551616",
    b"340282366920938463463374607431768211456",
    b"\"1970-01-01T00:00:00Z\"",
    b"\"9999-12-31T23:59:59.999999999Z\"",
    b"\"tracks\":[",
    b"\"start\":{",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x12\xff\xff\xff\xff\x0f",
    b".",
    b"*",
    b">",
    b" ",
    b"_INBOX.",
    b"$JS.API.",
];

pub fn random_bytes(rng: &mut StdRng) -> Vec<u8> {
    let len = if rng.random_ratio(1, 16) {
        rng.random_range(0..MAX_INPUT)
    } else {
        rng.random_range(0..256)
    };
    (0..len).map(|_| rng.random()).collect()
}

/// `seed` changed one to eight times.
pub fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut input = seed.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        mutate_once(rng, &mut input);
    }
    input.truncate(MAX_INPUT);
    input
}

fn mutate_once(rng: &mut StdRng, input: &mut Vec<u8>) {
    let at = |rng: &mut StdRng, input: &Vec<u8>| rng.random_range(0..=input.len());
    match rng.random_range(0..10) {
        0 if !input.is_empty() => {
            let index = rng.random_range(0..input.len());
            input[index] ^= 1 << rng.random_range(0..8);
        }
        1 if !input.is_empty() => {
            let index = rng.random_range(0..input.len());
            input[index] = rng.random();
        }
        2 => {
            let index = at(rng, input);
            let bytes: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            input.splice(index..index, bytes);
        }
        3 if !input.is_empty() => {
            let start = rng.random_range(0..input.len());
            let end = rng.random_range(start..=input.len().min(start + 64));
            input.drain(start..end);
        }
        4 if !input.is_empty() => {
            // A run repeated: long strings, repeated fields.
            let start = rng.random_range(0..input.len());
            let end = rng.random_range(start..=input.len().min(start + 32));
            let run = input[start..end].to_vec();
            let times = rng.random_range(1..256);
            let index = at(rng, input);
            input.splice(index..index, run.repeat(times));
        }
        5 => input.truncate(at(rng, input)),
        6 => {
            let token = TOKENS[rng.random_range(0..TOKENS.len())];
            let index = at(rng, input);
            input.splice(index..index, token.iter().copied());
        }
        7 => {
            // Deep nesting.
            let open: &[u8] = if rng.random() { b"[" } else { b"{\"a\":" };
            let depth = rng.random_range(1..4096);
            let index = at(rng, input);
            input.splice(index..index, open.repeat(depth));
        }
        8 => {
            // Many empty length-delimited fields: the densest repeated field protobuf allows.
            let field: u8 = rng.random_range(1..16) << 3 | 2;
            let index = at(rng, input);
            let times = rng.random_range(1..MAX_INPUT / 2);
            input.splice(index..index, [field, 0].repeat(times));
        }
        _ => {
            // A big varint length prefix: a protobuf field claiming more than there is.
            let index = at(rng, input);
            let field: u8 = rng.random_range(1..16) << 3 | 2;
            input.splice(index..index, [field, 0xff, 0xff, 0xff, 0xff, 0x07]);
        }
    }
}
