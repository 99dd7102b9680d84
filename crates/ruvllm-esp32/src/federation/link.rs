//! A reliable link over an unreliable byte stream (a UART, a socket, a pipe), stop-and-wait:
//! every data frame carries a sequence number and is sent again until the peer acknowledges
//! it, up to [`LinkConfig::retries`] times; a duplicate (its acknowledgement was lost) is
//! acknowledged again and not delivered twice. Frames that fail their CRC are dropped; the
//! sender's timeout recovers them. The transport is anything with `embedded-io-async`'s
//! `Read + Write`; time comes from a [`Clock`] (tokio on the host, a timer on a chip).

use super::wire::{self, Body, Decoder, Frame, Hello, Refusal, MAX_FRAME, VERSION};
use core::future::Future;
use embedded_io_async::{Read, Write};

/// Time for the link: milliseconds since any fixed start, and a timeout around a future.
pub trait Clock {
    fn now_ms(&self) -> u64;
    /// `f`'s output, or `None` when `ms` milliseconds pass first (`f` is then dropped: the
    /// link only hands it futures that can be dropped at any await without losing bytes).
    fn within<F: Future>(&self, ms: u64, f: F) -> impl Future<Output = Option<F::Output>>;
}

/// Timing of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// How long a sender waits for an acknowledgement before sending again.
    pub ack_ms: u64,
    /// Sends after the first before the peer counts as gone.
    pub retries: u32,
}

impl LinkConfig {
    /// How long a frame may go unacknowledged in all: what a dead peer costs.
    pub fn give_up_ms(&self) -> u64 {
        self.ack_ms * (self.retries as u64 + 1)
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig { ack_ms: 100, retries: 20 }
    }
}

/// What one end of a link counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes written: frames, resends and acknowledgements.
    pub sent_bytes: u64,
    /// Data frames sent again for want of an acknowledgement.
    pub retransmits: u32,
    /// Received frames dropped (COBS, CRC, decoding, length).
    pub bad_frames: u32,
}

/// Why a link operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError<E> {
    /// The transport failed.
    Io(E),
    /// The transport ended (the peer closed it).
    Closed,
    /// No acknowledgement after every retry: the peer is gone or the line is dead.
    NoAck,
    /// Nothing arrived within the time asked for.
    Silent,
    /// The peer refused the link.
    Refused(Refusal),
    /// This end refused the peer (and told it why).
    Refusing(Refusal),
    /// The peer said something that has no place here.
    Unexpected,
}

impl<E: core::fmt::Debug> core::fmt::Display for LinkError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LinkError::Io(e) => write!(f, "link failed: {e:?}"),
            LinkError::Closed => f.write_str("the other end closed the link"),
            LinkError::NoAck => f.write_str("no acknowledgement after every retry"),
            LinkError::Silent => f.write_str("nothing arrived in time"),
            LinkError::Refused(r) | LinkError::Refusing(r) => refusal(f, r),
            LinkError::Unexpected => f.write_str("unexpected message"),
        }
    }
}

fn refusal(f: &mut core::fmt::Formatter<'_>, r: &Refusal) -> core::fmt::Result {
    match r {
        Refusal::Version { theirs, ours } => {
            write!(f, "protocol version {theirs} where version {ours} is spoken (update both ends)")
        }
        Refusal::Model { theirs, ours, node } => write!(
            f,
            "node {node} holds a different model image (checksum {ours:08x}, the coordinator's {theirs:08x}): give every node the same model"
        ),
    }
}

/// One end of a link.
pub struct Link<T, C> {
    rx: Rx<T>,
    clock: C,
    cfg: LinkConfig,
    tx: [u8; MAX_FRAME],
    ack: [u8; 16],
    tx_seq: u16,
    rx_next: u16,
    /// A data frame that came while this end waited for an acknowledgement (acknowledged).
    inbox: Option<Body>,
    pub stats: LinkStats,
}

impl<T: Read + Write, C: Clock> Link<T, C> {
    pub fn new(io: T, clock: C, cfg: LinkConfig) -> Self {
        Link {
            rx: Rx { io, dec: Decoder::default(), buf: [0; 256], at: 0, end: 0, bad: 0 },
            clock,
            cfg,
            tx: [0; MAX_FRAME],
            ack: [0; 16],
            tx_seq: 0,
            rx_next: 0,
            inbox: None,
            stats: LinkStats::default(),
        }
    }

    pub fn config(&self) -> LinkConfig {
        self.cfg
    }

    /// Sends `body` and waits for its acknowledgement, sending again every
    /// [`LinkConfig::ack_ms`]; [`LinkError::NoAck`] after [`LinkConfig::retries`] resends.
    pub async fn send(&mut self, body: Body) -> Result<(), LinkError<T::Error>> {
        let seq = self.tx_seq;
        let n =
            wire::encode(&Frame { seq, body }, &mut self.tx).map(<[u8]>::len).ok_or(LinkError::Unexpected)?;
        for attempt in 0..=self.cfg.retries {
            if attempt > 0 {
                self.stats.retransmits += 1;
            }
            self.rx.io.write_all(&self.tx[..n]).await.map_err(LinkError::Io)?;
            self.rx.io.flush().await.map_err(LinkError::Io)?;
            self.stats.sent_bytes += n as u64;
            let deadline = self.clock.now_ms() + self.cfg.ack_ms;
            loop {
                let left = deadline.saturating_sub(self.clock.now_ms());
                let Some(frame) = self.frame_within(left).await? else { break };
                match frame {
                    Frame { seq: s, body: Body::Ack } if s == seq => {
                        self.tx_seq = seq.wrapping_add(1);
                        return Ok(());
                    }
                    Frame { body: Body::Ack, .. } => {}
                    // Room for one new data frame while waiting; another is left
                    // unacknowledged, so its sender sends it again later.
                    Frame { seq: s, .. } if self.inbox.is_some() && s == self.rx_next => {}
                    Frame { seq: s, body } => {
                        if let Some(body) = self.take_data(s, body).await? {
                            self.inbox = Some(body);
                        }
                    }
                }
            }
        }
        Err(LinkError::NoAck)
    }

    /// The next data body from the peer (acknowledged), waiting at most `ms` milliseconds
    /// when given ([`LinkError::Silent`] then).
    pub async fn recv(&mut self, ms: Option<u64>) -> Result<Body, LinkError<T::Error>> {
        if let Some(body) = self.inbox.take() {
            return Ok(body);
        }
        let deadline = ms.map(|ms| self.clock.now_ms() + ms);
        loop {
            let frame = match deadline {
                Some(d) => {
                    let left = d.saturating_sub(self.clock.now_ms());
                    self.frame_within(left).await?.ok_or(LinkError::Silent)?
                }
                None => self.frame().await?,
            };
            let Frame { seq, body } = frame;
            if body == Body::Ack {
                continue;
            }
            if let Some(body) = self.take_data(seq, body).await? {
                return Ok(body);
            }
        }
    }

    /// After the last exchange: acknowledges whatever the peer sends again (its last frame,
    /// when our acknowledgement of it was lost) until the peer is quiet for `ms` or closes,
    /// as TCP's TIME_WAIT does. Without it the peer's final send may never be acknowledged.
    pub async fn linger(&mut self, ms: u64) {
        while self.recv(Some(ms)).await.is_ok() {}
    }

    /// Opens the link from this end: sends `me`, returns the peer's [`Hello`] once it agrees.
    pub async fn hello(&mut self, me: Hello) -> Result<Hello, LinkError<T::Error>> {
        self.send(Body::Hello(me)).await?;
        match self.recv(Some(self.cfg.give_up_ms())).await? {
            Body::Welcome(h) => Ok(h),
            Body::Refuse(r) => Err(LinkError::Refused(r)),
            _ => Err(LinkError::Unexpected),
        }
    }

    /// Accepts a link opened by the peer, waiting at most `ms` for its [`Hello`]: refuses (and
    /// tells the peer why) another protocol version, or a model checksum other than `me`'s.
    pub async fn accept(&mut self, me: Hello, ms: u64) -> Result<Hello, LinkError<T::Error>> {
        let peer = match self.recv(Some(ms)).await? {
            Body::Hello(h) => h,
            _ => return Err(LinkError::Unexpected),
        };
        let refusal = if peer.version != VERSION {
            Some(Refusal::Version { theirs: peer.version, ours: VERSION })
        } else if peer.model != me.model {
            Some(Refusal::Model { theirs: peer.model, ours: me.model, node: me.node })
        } else {
            None
        };
        if let Some(r) = refusal {
            self.send(Body::Refuse(r)).await?;
            return Err(LinkError::Refusing(r));
        }
        self.send(Body::Welcome(me)).await?;
        Ok(peer)
    }

    /// Acknowledges a data frame; its body when it is new, `None` for a duplicate.
    async fn take_data(&mut self, seq: u16, body: Body) -> Result<Option<Body>, LinkError<T::Error>> {
        let fresh = seq == self.rx_next;
        if !fresh && seq != self.rx_next.wrapping_sub(1) {
            // Neither the next frame nor a resend of the last one: not acknowledged, so a
            // stale or misnumbered frame cannot be taken for the next one.
            return Ok(None);
        }
        let n = wire::encode(&Frame { seq, body: Body::Ack }, &mut self.ack).map(<[u8]>::len);
        let n = n.ok_or(LinkError::Unexpected)?;
        self.rx.io.write_all(&self.ack[..n]).await.map_err(LinkError::Io)?;
        self.rx.io.flush().await.map_err(LinkError::Io)?;
        self.stats.sent_bytes += n as u64;
        if fresh {
            self.rx_next = seq.wrapping_add(1);
            return Ok(Some(body));
        }
        Ok(None)
    }

    async fn frame_within(&mut self, ms: u64) -> Result<Option<Frame>, LinkError<T::Error>> {
        let got = self.clock.within(ms, self.rx.frame()).await.transpose();
        self.stats.bad_frames = self.rx.bad;
        got
    }

    async fn frame(&mut self) -> Result<Frame, LinkError<T::Error>> {
        let got = self.rx.frame().await;
        self.stats.bad_frames = self.rx.bad;
        got
    }
}

/// The receiving half: the transport and the bytes read but not yet decoded. Cancel-safe:
/// every byte read is kept here before the next await.
struct Rx<T> {
    io: T,
    dec: Decoder<MAX_FRAME>,
    buf: [u8; 256],
    at: usize,
    end: usize,
    /// Frames dropped.
    bad: u32,
}

impl<T: Read> Rx<T> {
    /// The next frame that decodes; dropped ones are counted.
    async fn frame(&mut self) -> Result<Frame, LinkError<T::Error>> {
        loop {
            while self.at < self.end {
                let (used, got) = self.dec.feed(&self.buf[self.at..self.end]);
                self.at += used;
                match got {
                    Some(Ok(frame)) => return Ok(frame),
                    Some(Err(_)) => self.bad += 1,
                    None => {}
                }
            }
            let n = self.io.read(&mut self.buf).await.map_err(LinkError::Io)?;
            if n == 0 {
                return Err(LinkError::Closed);
            }
            (self.at, self.end) = (0, n);
        }
    }
}
