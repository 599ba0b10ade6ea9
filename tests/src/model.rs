//! A model of what playhead should record for a stream of song observations, and a
//! deterministic generator of such streams (mostly repeats, spelled in several ways).

use std::collections::BTreeMap;

use async_nats::jetstream;
use bytes::Bytes;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::station_song;
use playhead_proto::v1::SongObserved;
use prost::Message;

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// One observation to publish.
#[derive(Debug, Clone)]
pub struct Observation {
    pub station: String,
    pub artist: String,
    pub title: String,
}

/// A play the model expects: (artist, title) as first spelled.
pub type ExpectedPlay = (String, String);

/// Observations over `stations` stations where about `repeat_percent`% repeat the song on
/// air (with case and punctuation variants), and what each station's history must be.
pub fn generate(
    seed: u64,
    stations: usize,
    observations: usize,
    repeat_percent: u64,
) -> (Vec<Observation>, BTreeMap<String, Vec<ExpectedPlay>>) {
    let mut rng = Rng::new(seed);
    let mut on_air: BTreeMap<String, usize> = BTreeMap::new();
    let mut expected: BTreeMap<String, Vec<ExpectedPlay>> = BTreeMap::new();
    let mut generated = Vec::with_capacity(observations);
    for _ in 0..observations {
        let station = format!("station-{}", rng.below(stations as u64));
        let current = on_air.get(&station).copied();
        let song = match current {
            Some(song) if rng.below(100) < repeat_percent => song,
            Some(song) => (song + 1 + rng.below(20) as usize) % 50,
            None => rng.below(50) as usize,
        };
        let (artist, title) = (format!("Artist {song}"), format!("Song Title {song}"));
        let (artist, title) = match rng.below(3) {
            0 => (artist, title),
            1 => (artist.to_uppercase(), title.to_lowercase()),
            _ => (format!(" {artist}"), format!("{title}!")),
        };
        if current != Some(song) {
            let tidy = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
            expected
                .entry(station.clone())
                .or_default()
                .push((tidy(&artist), tidy(&title)));
            on_air.insert(station.clone(), song);
        }
        generated.push(Observation {
            station,
            artist,
            title,
        });
    }
    debug_assert_eq!(expected, expected_plays(&generated));
    (generated, expected)
}

/// What each station's history must be after applying exactly `observations` (in order) to
/// empty stations: a play starts whenever the song differs, spelling aside, from the one on
/// air (the spelling variants of [`generate`] differ only in case, punctuation and spaces).
pub fn expected_plays(observations: &[Observation]) -> BTreeMap<String, Vec<ExpectedPlay>> {
    let key = |text: &str| {
        text.chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .collect::<String>()
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let tidy = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut on_air: BTreeMap<&str, (String, String)> = BTreeMap::new();
    let mut expected: BTreeMap<String, Vec<ExpectedPlay>> = BTreeMap::new();
    for observation in observations {
        let song = (key(&observation.artist), key(&observation.title));
        if on_air.get(observation.station.as_str()) != Some(&song) {
            expected
                .entry(observation.station.clone())
                .or_default()
                .push((tidy(&observation.artist), tidy(&observation.title)));
            on_air.insert(&observation.station, song);
        }
    }
    expected
}

/// Acknowledgements a publisher leaves outstanding before it awaits the oldest (async-nats
/// caps them at 5,000 per context by default and then blocks new publishes).
const ACK_WINDOW: usize = 1_024;

/// Publishes every observation (pipelined) and waits for the inbox to acknowledge them all.
pub async fn publish_all(jetstream: &jetstream::Context, observations: &[Observation]) {
    let messages = observations.iter().map(|observation| {
        let station = StationId::parse(observation.station.clone()).expect("valid station");
        let payload = SongObserved {
            station_id: observation.station.clone(),
            artist: observation.artist.clone(),
            title: observation.title.clone(),
            ..Default::default()
        };
        (station_song(&station), payload.encode_to_vec().into())
    });
    publish_pipelined(jetstream, messages).await;
}

/// One message to publish: its subject, its headers (none when empty) and its payload.
#[derive(Debug, Clone)]
pub struct Publication {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub payload: Bytes,
}

impl From<(String, Bytes)> for Publication {
    fn from((subject, payload): (String, Bytes)) -> Self {
        Self {
            subject,
            headers: async_nats::HeaderMap::new(),
            payload,
        }
    }
}

/// Publishes every message with at most `ACK_WINDOW` acknowledgements outstanding, and
/// waits until the broker acknowledged them all.
pub async fn publish_pipelined<M: Into<Publication>>(
    jetstream: &jetstream::Context,
    messages: impl IntoIterator<Item = M>,
) {
    let mut acks = std::collections::VecDeque::with_capacity(ACK_WINDOW);
    for message in messages {
        let Publication {
            subject,
            headers,
            payload,
        } = message.into();
        if acks.len() == ACK_WINDOW {
            let oldest: jetstream::context::PublishAckFuture =
                acks.pop_front().expect("window is full");
            oldest.await.expect("inbox acknowledged");
        }
        let sent = if headers.is_empty() {
            jetstream.publish(subject, payload).await
        } else {
            jetstream
                .publish_with_headers(subject, headers, payload)
                .await
        };
        acks.push_back(sent.expect("publish sent"));
    }
    for ack in acks {
        ack.await.expect("inbox acknowledged");
    }
}
