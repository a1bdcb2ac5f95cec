//! The status channel: one pipe per pool, like Postfix's status pipe.
//!
//! Every worker of a pool shares the pool's write end, at the descriptor
//! number named in its environment ([`ENV`]), and writes fixed 10-byte
//! messages: a marker byte, the state, and the worker's token (little
//! endian). Writes of fewer than `PIPE_BUF` bytes to a pipe are atomic, so
//! messages of concurrent workers never interleave, and a token the pool no
//! longer knows (a worker that died after writing) is ignored.
//!
//! The write end is blocking (a worker waits if the parent falls 6,000
//! messages behind, rather than lose one) and close-on-exec in the parent,
//! always: an executed worker gets it through a `pre_exec` step that clears
//! the flag in that child only (so no spawn on another thread can inherit
//! it), and sets it again itself when it reads [`ENV`] (so the worker's own
//! children do not). A forked worker closes the read ends, so that a report
//! fails with `EPIPE` once the master is gone instead of filling the pipe.
//! The read end is non-blocking and close-on-exec.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use mio::unix::pipe::Receiver;

use super::core::Report;
use crate::{Error, Result};

/// The environment variable that tells an executed worker where its status
/// channel is: `"<descriptor>:<token>"`, both decimal.
pub const ENV: &str = "EVCHILD_WORKER";

/// The environment variable that tells an executed worker its master's pid
/// (decimal), so that [`worker::is_orphaned`](super::worker::is_orphaned)
/// compares its parent with the master that started it, whenever it first
/// looks.
pub const MASTER_ENV: &str = "EVCHILD_WORKER_MASTER";

/// The length of one message.
pub(crate) const MSG_LEN: usize = 10;
const MARK: u8 = 0xE7;

/// The message a worker writes.
pub(crate) const fn encode(report: Report, token: u64) -> [u8; MSG_LEN] {
    let state = match report {
        Report::Ready => b'R',
        Report::Busy => b'B',
        Report::Idle => b'I',
        Report::Heartbeat => b'H',
    };
    let t = token.to_le_bytes();
    [MARK, state, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]
}

/// The parent's end of a pool's status pipe, and the write end it hands to
/// each worker.
#[derive(Debug)]
pub(crate) struct StatusPipe {
    read: Receiver,
    write: OwnedFd,
    /// A message cut by a read (only a misbehaving writer can cause one).
    partial: Vec<u8>,
}

impl StatusPipe {
    pub(crate) fn new() -> Result<Self> {
        let (read, write) = crate::sys::spawn::pipe().map_err(|e| Error::io("pipe2", e))?;
        let read = Receiver::from(read);
        read.set_nonblocking(true)
            .map_err(|e| Error::io("fcntl(O_NONBLOCK)", e))?;
        Ok(StatusPipe {
            read,
            write,
            partial: Vec::with_capacity(MSG_LEN),
        })
    }

    pub(crate) fn receiver(&mut self) -> &mut Receiver {
        &mut self.read
    }

    /// The write end's descriptor number, as workers see it.
    pub(crate) fn write_raw(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    #[cfg(test)]
    pub(crate) fn write_fd(&self) -> &OwnedFd {
        &self.write
    }

    /// Reads every message waiting, calling `each(token, report)`.
    pub(crate) fn drain(&mut self, mut each: impl FnMut(u64, Report)) -> Result<()> {
        let mut buf = [0u8; MSG_LEN * 400];
        loop {
            let n = match self.read.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read(status pipe)", e)),
            };
            let mut bytes = &buf[..n];
            // Complete a message cut by the previous read.
            if !self.partial.is_empty() {
                let take = (MSG_LEN - self.partial.len()).min(bytes.len());
                self.partial.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.partial.len() == MSG_LEN {
                    let msg: [u8; MSG_LEN] = self.partial[..].try_into().unwrap_or([0; MSG_LEN]);
                    self.partial.clear();
                    if let Some((token, report)) = decode(&msg) {
                        each(token, report);
                    }
                }
            }
            while !bytes.is_empty() {
                if bytes[0] != MARK {
                    // Not a message of ours: skip to the next marker.
                    bytes = &bytes[1..];
                    continue;
                }
                if bytes.len() < MSG_LEN {
                    self.partial.extend_from_slice(bytes);
                    break;
                }
                if let Some((token, report)) = decode(&bytes[..MSG_LEN]) {
                    each(token, report);
                }
                bytes = &bytes[MSG_LEN..];
            }
        }
    }
}

fn decode(msg: &[u8]) -> Option<(u64, Report)> {
    let report = match msg.get(1)? {
        b'R' => Report::Ready,
        b'B' => Report::Busy,
        b'I' => Report::Idle,
        b'H' => Report::Heartbeat,
        _ => return None,
    };
    let token = u64::from_le_bytes(msg.get(2..MSG_LEN)?.try_into().ok()?);
    Some((token, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_even_when_cut() {
        let mut pipe = StatusPipe::new().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode(Report::Ready, 7));
        bytes.extend_from_slice(&[0, 1, 2]); // junk is skipped
        bytes.extend_from_slice(&encode(Report::Busy, u64::MAX));
        let half = encode(Report::Idle, 300);
        bytes.extend_from_slice(&half[..4]);
        nix::unistd::write(pipe.write_fd(), &bytes).unwrap();
        let mut got = Vec::new();
        pipe.drain(|t, r| got.push((t, r))).unwrap();
        nix::unistd::write(pipe.write_fd(), &half[4..]).unwrap();
        pipe.drain(|t, r| got.push((t, r))).unwrap();
        assert_eq!(
            got,
            [
                (7, Report::Ready),
                (u64::MAX, Report::Busy),
                (300, Report::Idle)
            ]
        );
    }
}
