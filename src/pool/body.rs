//! The client's request body on its way upstream, remembering whether the
//! client broke it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The client's request body, streamed upstream as the upstream reads it
/// (hyper reads from the client only when the upstream side has room, so
/// an upload never piles up in the gateway).
pub struct ClientBody {
    inner: Option<Incoming>,
    /// Set when reading the client's body failed (a malformed chunk, a
    /// length the client did not send): the request was the client's
    /// fault, not the upstream's.
    failed: Arc<AtomicBool>,
}

impl ClientBody {
    pub fn new(inner: Option<Incoming>) -> (Self, Arc<AtomicBool>) {
        let failed = Arc::new(AtomicBool::new(false));
        let body = Self {
            inner,
            failed: Arc::clone(&failed),
        };
        (body, failed)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.failed.store(true, Ordering::Release);
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
