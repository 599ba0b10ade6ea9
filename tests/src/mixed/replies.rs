//! The answers a node sends to the workload's reply subjects, collected on a core NATS
//! subscription taken before anything is published.

use bytes::Bytes;
use futures::StreamExt;

/// One answer as received: (reply subject, payload).
pub type Reply = (String, Bytes);

/// A subscription gathering every answer until [`Replies::collect`].
pub struct Replies {
    client: async_nats::Client,
    gathering: tokio::task::JoinHandle<Vec<Reply>>,
}

impl Replies {
    /// Subscribes `client` (a connection of its own: collecting drains it) to `subjects`.
    pub async fn subscribe(client: async_nats::Client, subjects: &'static str) -> Replies {
        let mut subscriber = client.subscribe(subjects).await.expect("subscribe");
        client.flush().await.expect("subscription registered");
        // Gathered as they come: a subscriber left unread drops what overflows its buffer.
        let gathering = tokio::spawn(async move {
            let mut replies = Vec::new();
            while let Some(message) = subscriber.next().await {
                replies.push((message.subject.to_string(), message.payload));
            }
            replies
        });
        Replies { client, gathering }
    }

    /// Every answer received so far. The answers a node sent before acknowledging its
    /// messages reached the broker before that acknowledgement; the flush makes them reach
    /// this subscription, and the drain ends it once they are read.
    pub async fn collect(self) -> Vec<Reply> {
        self.client.flush().await.expect("flush");
        self.client.drain().await.expect("drain");
        self.gathering.await.expect("the gathering task")
    }
}
