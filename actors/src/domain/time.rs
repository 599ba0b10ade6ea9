//! Domain time: Unix epoch milliseconds, as the broker stamps stored messages (the type is the
//! client crate's, so publishers and the node count time the same way).

pub use playhead_client::time::Timestamp;
