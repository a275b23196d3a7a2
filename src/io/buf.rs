//! Bytes in hand that their reader or writer has not taken yet.
//!
//! A session spends most of its life waiting, so memory held for bytes
//! already taken is memory held for nothing: the buffer goes back as soon as
//! its last byte is taken. Used for what arrived behind a handshake's head
//! ([`crate::io::prefixed`]) and for the TLS stream's unread plaintext and
//! unwritten ciphertext ([`crate::tls::stream`]).

use tokio::io::ReadBuf;

#[derive(Debug, Default)]
pub struct Leftover {
    buf: Vec<u8>,
    /// Bytes before this were taken.
    at: usize,
}

impl Leftover {
    pub fn new(buf: Vec<u8>) -> Self {
        Self { buf, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at == self.buf.len()
    }

    /// The bytes not taken yet.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// Memory held, taken bytes included.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Lets `f` append to the bytes in hand (and only append: what it
    /// finds in the vector before its call is not its to change).
    pub fn append_with<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        f(&mut self.buf)
    }

    /// Puts bytes back in front of those not taken yet.
    pub fn unread(&mut self, bytes: &[u8]) {
        self.buf.splice(self.at..self.at, bytes.iter().copied());
    }

    /// Marks `n` more bytes taken; frees the buffer once all are.
    pub fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.buf.len());
        if self.is_empty() {
            *self = Self::default();
        }
    }

    /// Moves as many bytes as fit into `dst`; returns how many.
    pub fn read_into(&mut self, dst: &mut ReadBuf<'_>) -> usize {
        let n = self.bytes().len().min(dst.remaining());
        dst.put_slice(&self.bytes()[..n]);
        self.consume(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_bytes_give_their_memory_back() {
        let mut l = Leftover::new(b"abcdef".to_vec());
        let mut space = [0u8; 4];
        let mut dst = ReadBuf::new(&mut space);
        assert_eq!(l.read_into(&mut dst), 4);
        assert_eq!(dst.filled(), b"abcd");
        assert_eq!(l.bytes(), b"ef");
        l.unread(b"cd");
        assert_eq!(l.bytes(), b"cdef");
        l.extend(b"g");
        l.consume(4);
        assert_eq!(l.bytes(), b"g");
        l.consume(1);
        assert!(l.is_empty());
        assert_eq!(l.capacity(), 0);
        l.consume(3);
        assert!(l.is_empty());
    }
}
