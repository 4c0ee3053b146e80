//! [`Batch`]: reads and writes on a [`Stream`] that tell the engine once.

use std::io;

use super::Stream;

/// A batch of reads and writes on a [`Stream`] that tells the engine once, when it ends
/// (see [`Stream::batch`]). It reads and writes as the stream does (blocking or not, as
/// the stream was set).
pub struct Batch<'a> {
    pub(super) stream: &'a mut Stream,
}

impl Batch<'_> {
    /// [`Stream::read_with`] within the batch.
    pub fn read_with<R>(&mut self, f: impl FnOnce(&[u8]) -> (usize, R)) -> io::Result<R> {
        self.stream.read_with_in(f)
    }

    /// [`Stream::write_with`] within the batch.
    pub fn write_with<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> io::Result<R> {
        self.stream.write_with_in(f)
    }

    /// Tell the engine now what the batch has done so far; the batch stays open.
    pub fn ring(&mut self) {
        let s = &*self.stream;
        s.bell.settle(&s.host, &s.conn);
    }
}

impl io::Read for Batch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read_in(buf)
    }
}

impl io::Write for Batch<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write_in(buf)
    }

    /// Rings the doorbell for what was written so far.
    fn flush(&mut self) -> io::Result<()> {
        self.ring();
        Ok(())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.stream.end_batch();
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("stream", &self.stream)
            .finish()
    }
}
