//! Client text messages the gateway answers itself instead of passing them
//! on (in-band refresh). They are JSON objects: a fragmented client text
//! message is held for the interceptor only while it can still be one.

use std::future::Future;
use std::pin::Pin;

/// Client text messages the gateway answers itself (refresh).
pub trait Interceptor: Send + Sync {
    /// Cheap test on a client text message: is this for the gateway?
    fn wants(&self, text: &str) -> bool;
    /// The answer to send back to the client.
    fn answer<'a>(&'a self, text: String) -> Pin<Box<dyn Future<Output = String> + Send + 'a>>;
}
