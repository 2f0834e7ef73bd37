//! The two body types the embedding hands to hyper: a complete body, or a channel fed
//! by the stream driver (frames as the filter lets them through, or an error that
//! resets the stream, which is how a cut-short response reaches the client).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Why a channel body ended early: the stream is reset (HTTP/1: the connection closes
/// without a terminating chunk; HTTP/2: RST_STREAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamReset;

impl std::fmt::Display for StreamReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stream reset")
    }
}

impl std::error::Error for StreamReset {}

/// What one channel carries.
pub type FrameResult = Result<Frame<Bytes>, StreamReset>;

/// A body that is either complete or streamed through a channel.
#[derive(Debug)]
pub enum ChannelBody {
    /// Everything at once (`None` once sent).
    Full(Option<Bytes>),
    /// Frames from the driver; the channel closing ends the body.
    Channel(mpsc::Receiver<FrameResult>),
    /// The same without a bound (the request body towards an upstream: the driver must
    /// never wait on a consumer it is itself responsible for polling).
    Unbounded(mpsc::UnboundedReceiver<FrameResult>),
}

impl ChannelBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ChannelBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// An unbounded streamed body and the sender that feeds it.
    pub fn unbounded() -> (mpsc::UnboundedSender<FrameResult>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, ChannelBody::Unbounded(rx))
    }

    /// A streamed body and the sender that feeds it.
    pub fn channel(capacity: usize) -> (mpsc::Sender<FrameResult>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelBody::Channel(rx))
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = StreamReset;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamReset>>> {
        match self.get_mut() {
            ChannelBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ChannelBody::Channel(rx) => rx.poll_recv(cx),
            ChannelBody::Unbounded(rx) => rx.poll_recv(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ChannelBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ChannelBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ChannelBody::Channel(_) | ChannelBody::Unbounded(_) => SizeHint::default(),
        }
    }
}
