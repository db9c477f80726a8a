//! The bench payload: a 16-byte header (publisher id + sequence number, intended
//! send time) followed by filler up to the requested size.

use crate::error::RunError;

/// The smallest payload the bench sends: the header must fit.
pub(crate) const HEADER_LEN: usize = 16;

/// Publisher id of warm-up messages: receivers skip them.
pub(crate) const WARMUP_PUBLISHER: u16 = 0;

/// Publisher id of measured messages.
pub(crate) const MEASURED_PUBLISHER: u16 = 1;

const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// What a receiver reads from one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Who sent it.
    pub(crate) publisher: u16,
    /// Its sequence number, from 0, per publisher.
    pub(crate) seq: u64,
    /// Intended send time in ns since the run's base instant (0 in throughput runs).
    pub(crate) intended_ns: u64,
    /// The payload length.
    pub(crate) len: usize,
}

impl Stamp {
    /// Reads the header of `payload`; fails on a payload the bench did not send.
    pub(crate) fn parse(payload: &[u8]) -> Result<Stamp, RunError> {
        let (Some(word), Some(intended)) = (
            payload.first_chunk::<8>(),
            payload.get(8..).and_then(<[u8]>::first_chunk::<8>),
        ) else {
            return Err(RunError::NotBench {
                len: payload.len(),
                header: HEADER_LEN,
            });
        };
        let word = u64::from_le_bytes(*word);
        Ok(Stamp {
            publisher: (word >> SEQ_BITS) as u16,
            seq: word & SEQ_MASK,
            intended_ns: u64::from_le_bytes(*intended),
            len: payload.len(),
        })
    }
}

/// Writes the header of message `seq` from `publisher` into `buf` (at least
/// [`HEADER_LEN`] bytes; the rest is left as it is).
pub(crate) fn write_header(buf: &mut [u8], publisher: u16, seq: u64, intended_ns: u64) {
    let word = (u64::from(publisher) << SEQ_BITS) | (seq & SEQ_MASK);
    if let Some(head) = buf.get_mut(0..8) {
        head.copy_from_slice(&word.to_le_bytes());
    }
    if let Some(time) = buf.get_mut(8..16) {
        time.copy_from_slice(&intended_ns.to_le_bytes());
    }
}

/// A payload buffer of `size` bytes of filler, header to be written per message.
pub(crate) fn buffer(size: usize) -> Vec<u8> {
    vec![b'x'; size.max(HEADER_LEN)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut buf = buffer(32);
        write_header(&mut buf, 7, 123_456, 987);
        let stamp = Stamp::parse(&buf).unwrap();
        assert_eq!(
            stamp,
            Stamp {
                publisher: 7,
                seq: 123_456,
                intended_ns: 987,
                len: 32
            }
        );
        assert!(Stamp::parse(b"short").is_err());
    }
}
