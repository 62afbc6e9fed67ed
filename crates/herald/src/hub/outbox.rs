//! One connection as the hub sees it: who it is, and its queue of frames to write.
//!
//! The hub only ever calls [`ConnHandle::push`], which never waits: a full queue marks the
//! connection as a slow consumer and asks it to close with 1013, so a publisher and the other
//! recipients never wait on one slow socket.
//!
//! Who writes the queue to the socket:
//! - a *direct* connection (a plain WebSocket on a TCP socket Herald accepted itself) is
//!   written by its node's [`Flusher`]: a push only queues the frame and puts the connection
//!   on the flusher's list, and the flusher writes each listed connection's whole queue with
//!   one `writev`. No task wakes per delivery, and the busier the node, the more frames each
//!   write carries. When the socket is full, the connection's own task waits for it to drain;
//! - any other connection (permessage-deflate, or a socket from an embedding app's server)
//!   is written by its own task, which a push wakes.
//!
//! Either way every write takes the connection's lock and writes from the front of the queue,
//! so frames reach the client in the order they were pushed.

use std::collections::{HashSet, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::flusher::Flusher;
use crate::auth::Principal;
use crate::protocol::{CloseReason, Encoding, Frame};
use crate::publication::Publication;
use crate::wire;

/// Frames one `writev` carries at most (two slices each: header and payload).
const WRITE_BATCH: usize = 32;

/// The hub's key for a connection.
pub type ConnId = u64;

/// The shared half of a connection: the hub holds it in its indexes, publishers push to it,
/// the connection's task reads the socket and ends it.
#[derive(Debug)]
pub struct ConnHandle {
    pub id: ConnId,
    /// The id clients see (`client_id`), a UUID v7.
    pub client_id: String,
    pub remote_addr: Option<SocketAddr>,
    pub connected_at: SystemTime,
    /// How this connection's frames are encoded.
    pub encoding: Encoding,
    principal: Mutex<Principal>,
    /// Topics this connection is subscribed to; changed only by the hub, under its lock.
    pub(crate) topics: Mutex<HashSet<Arc<str>>>,
    out: Mutex<Out>,
    /// Wakes the connection's task: a close was asked for, a write failed or blocked, or (for
    /// a task-written connection) frames were queued.
    wake: Notify,
    /// Where a direct connection is listed to be written; `None` for a task-written one.
    flusher: Option<Arc<Flusher>>,
    capacity: usize,
    me: Weak<ConnHandle>,
    /// Unix milliseconds of the last ping or pong from the client.
    last_heartbeat_ms: AtomicU64,
}

/// One queued frame; `counted` frames count toward the queue's capacity: deliveries, replies,
/// pings and pongs, everything a client can make the server queue. The others do not: the
/// welcome, the offline inbox and a resume's replay (bounded by the server's config, and
/// written by the connection's task before it reads again), and the one close frame.
#[derive(Debug)]
struct Queued {
    frame: Frame,
    counted: bool,
    /// A user-scope publication, kept in the user's inbox if this frame is never written.
    keep: Option<Arc<Publication>>,
}

impl Queued {
    fn new(frame: Frame, counted: bool) -> Self {
        Self {
            frame,
            counted,
            keep: None,
        }
    }
}

#[derive(Debug, Default)]
struct Out {
    queue: VecDeque<Queued>,
    /// How many queued frames count toward the capacity.
    counted: usize,
    /// Bytes of the front frame already written (direct connections).
    front_written: usize,
    /// User-scope publications dropped from the queue unwritten (a slow consumer's).
    undelivered: Vec<Arc<Publication>>,
    /// The socket of a direct connection, until its task ends.
    stream: Option<Arc<TcpStream>>,
    /// The close frame is queued: nothing may follow it.
    close_queued: bool,
    /// On the flusher's list.
    scheduled: bool,
    /// The socket took no more: the connection's task waits for it and writes.
    blocked: bool,
    /// The task writes the queue itself for now (a resume's replay is being put in place).
    held: bool,
    /// A write failed: the client is gone.
    failed: bool,
    /// The connection ended: nothing more is queued.
    ended: bool,
    close: Option<CloseReason>,
    /// When the wait of the queue's oldest frame began (its publication's acceptance on this
    /// node, or its queueing), recorded when a write empties the queue
    /// (`herald_delivery_seconds`).
    waiting_since: Option<std::time::Instant>,
}

impl Out {
    /// The queue is full: the connection is a slow consumer. What it holds is dropped now
    /// (but a frame begun, which must be finished before the close frame), its user-scope
    /// messages set aside for the inbox, so the publisher who found it full keeps them in
    /// order before its own (`Hub::undelivered_of`).
    fn mark_slow(&mut self) {
        if *self.close.get_or_insert(CloseReason::SLOW_CONSUMER) != CloseReason::SLOW_CONSUMER {
            return;
        }
        self.set_aside_queue();
    }

    /// Drops every queued frame but a half-written one, keeping user-scope messages aside.
    fn set_aside_queue(&mut self) {
        let started = usize::from(self.front_written > 0);
        let dropped: Vec<Queued> = self.queue.drain(started..).collect();
        self.undelivered
            .extend(dropped.into_iter().filter_map(|q| q.keep));
        self.counted = self.queue.iter().filter(|q| q.counted).count();
    }

    /// Whether anything more may be queued: not after the end, a failed write or the close
    /// frame (RFC 6455 5.5.1: nothing follows it), and to a slow consumer only its close frame.
    fn accepts(&self, close_frame: bool) -> bool {
        let slow = self.close == Some(CloseReason::SLOW_CONSUMER);
        !(self.ended || self.failed || self.close_queued || (slow && !close_frame))
    }
}

/// What the connection's task has to do after it was woken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attention {
    /// Close with this reason.
    Close(CloseReason),
    /// A write failed.
    Failed,
    /// The socket is full: wait until it takes more, then [`ConnHandle::write_queued`].
    Blocked,
    /// Frames are queued for the task to write (task-written connections).
    Frames,
    Nothing,
}

/// How far a direct write got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// Everything queued was written.
    All,
    /// The socket is full.
    Blocked,
    /// The socket failed.
    Failed,
}

impl ConnHandle {
    /// A connection written by its own task (see the module docs).
    pub fn new(
        id: ConnId,
        principal: Principal,
        remote_addr: Option<SocketAddr>,
        encoding: Encoding,
        capacity: usize,
    ) -> Arc<Self> {
        Self::build(id, principal, remote_addr, encoding, capacity, None)
    }

    /// A connection whose queue the node writes straight to `stream` (see the module docs).
    pub(crate) fn direct(
        id: ConnId,
        principal: Principal,
        remote_addr: Option<SocketAddr>,
        encoding: Encoding,
        capacity: usize,
        stream: Arc<TcpStream>,
        flusher: Arc<Flusher>,
    ) -> Arc<Self> {
        let conn = Self::build(
            id,
            principal,
            remote_addr,
            encoding,
            capacity,
            Some(flusher),
        );
        conn.out().stream = Some(stream);
        conn
    }

    fn build(
        id: ConnId,
        principal: Principal,
        remote_addr: Option<SocketAddr>,
        encoding: Encoding,
        capacity: usize,
        flusher: Option<Arc<Flusher>>,
    ) -> Arc<Self> {
        let now = SystemTime::now();
        Arc::new_cyclic(|me| Self {
            id,
            client_id: uuid::Uuid::now_v7().to_string(),
            remote_addr,
            connected_at: now,
            encoding,
            principal: Mutex::new(principal),
            topics: Mutex::new(HashSet::new()),
            out: Mutex::new(Out::default()),
            wake: Notify::new(),
            flusher,
            capacity,
            me: me.clone(),
            last_heartbeat_ms: AtomicU64::new(unix_ms(now)),
        })
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        // Every update of `Out` is a few field writes that do not panic: a poisoned lock still
        // holds a consistent queue.
        crate::sync::lock(&self.out)
    }

    /// Queues a frame without waiting. Returns false when the frame was not queued: the
    /// connection is gone or a slow consumer, or its queue was full (it is then closed as a
    /// slow consumer).
    pub fn push(&self, frame: Frame) -> bool {
        match self.encoding {
            Encoding::Json => self.push_encoded(frame),
            encoding => self.push_encoded(encoding.encode(&frame)),
        }
    }

    /// Queues a frame already in this connection's encoding (the hub's fan-out path, which
    /// encodes each publication once per encoding).
    pub fn push_encoded(&self, frame: Frame) -> bool {
        self.enqueue([frame], true, false, None)
    }

    /// Queues a publication's frame (already in this connection's encoding); `accepted` is
    /// when the node took the publication, where `herald_delivery_seconds` starts if the
    /// queue was empty. A user-scope one (`keep`) goes back to the user's inbox if the
    /// connection ends before it was written.
    pub(crate) fn push_published(
        &self,
        frame: Frame,
        accepted: std::time::Instant,
        keep: Option<&Arc<Publication>>,
    ) -> bool {
        self.enqueue_since([frame], true, false, keep, Some(accepted))
    }

    /// Queues the connection's one close frame, uncounted, even to a slow consumer that is
    /// being closed.
    pub(crate) fn push_close(&self, frame: Frame) -> bool {
        self.enqueue([frame], false, true, None)
    }

    /// Queues a ping, counted; skipped when the queue is full (the connection is about to be
    /// closed as a slow consumer, or its writes time out).
    pub(crate) fn push_ping(&self, frame: Frame) -> bool {
        let mut out = self.out();
        if !out.accepts(false) || out.counted >= self.capacity {
            return false;
        }
        out.counted += 1;
        out.queue.push_back(Queued::new(frame, true));
        self.notify_writer(out);
        true
    }

    /// Queues the answer to a client's ping, counted. When the queue is full, the newest pong
    /// not yet being written takes this payload instead (RFC 6455 5.5.3 lets a server answer
    /// only the latest ping), or, if there is none, the ping goes unanswered: a client that
    /// streams pings and never reads makes the server hold at most `send_queue` frames.
    pub(crate) fn push_pong(&self, frame: Frame) -> bool {
        let mut out = self.out();
        if !out.accepts(false) {
            return false;
        }
        if out.counted < self.capacity {
            out.counted += 1;
            out.queue.push_back(Queued::new(frame, true));
            self.notify_writer(out);
            return true;
        }
        let started = usize::from(out.front_written > 0);
        let newest_pong = out
            .queue
            .iter_mut()
            .skip(started)
            .rev()
            .find(|q| matches!(q.frame, Frame::Pong(_)));
        match newest_pong {
            Some(queued) => {
                queued.frame = frame;
                true
            }
            None => false,
        }
    }

    /// Queues frames that do not count toward the capacity (see [`Queued`]), in this
    /// connection's encoding.
    pub(crate) fn push_uncounted(&self, frames: impl IntoIterator<Item = Frame>) -> bool {
        let encoding = self.encoding;
        self.enqueue(
            frames.into_iter().map(|f| encoding.encode(&f)),
            false,
            false,
            None,
        )
    }

    fn enqueue(
        &self,
        frames: impl IntoIterator<Item = Frame>,
        counted: bool,
        close_frame: bool,
        keep: Option<&Arc<Publication>>,
    ) -> bool {
        self.enqueue_since(frames, counted, close_frame, keep, None)
    }

    /// [`Self::enqueue`], with when the frames' wait began (now, by default).
    fn enqueue_since(
        &self,
        frames: impl IntoIterator<Item = Frame>,
        counted: bool,
        close_frame: bool,
        keep: Option<&Arc<Publication>>,
        since: Option<std::time::Instant>,
    ) -> bool {
        let mut out = self.out();
        if !out.accepts(close_frame) {
            return false;
        }
        // The close frame is the last: from the moment it is queued (under this lock), nothing
        // else is.
        out.close_queued |= close_frame;
        let before = out.queue.len();
        for frame in frames {
            if counted && out.counted >= self.capacity {
                out.mark_slow();
                drop(out);
                self.wake.notify_one();
                return false;
            }
            out.counted += usize::from(counted);
            out.queue.push_back(Queued {
                frame,
                counted,
                keep: keep.cloned(),
            });
        }
        if out.queue.len() > before {
            if before == 0 {
                out.waiting_since = Some(since.unwrap_or_else(std::time::Instant::now));
            }
            self.notify_writer(out);
        }
        true
    }

    /// Tells whoever writes this connection that frames are queued: lists it on its flusher
    /// (once, and not while its task writes it), or wakes its task.
    fn notify_writer(&self, mut out: MutexGuard<'_, Out>) {
        let Some(flusher) = &self.flusher else {
            drop(out);
            self.wake.notify_one();
            return;
        };
        if out.scheduled || out.blocked || out.held || out.ended {
            return;
        }
        out.scheduled = true;
        drop(out);
        if let Some(me) = self.me.upgrade() {
            flusher.schedule(me);
        }
    }

    /// The flusher's turn: writes what is queued unless the task is writing it.
    pub(crate) fn flush_scheduled(&self) {
        let mut out = self.out();
        out.scheduled = false;
        if out.blocked || out.held || out.failed || out.ended {
            return;
        }
        match write_out(&mut out) {
            Written::All => {}
            Written::Blocked => {
                out.blocked = true;
                drop(out);
                self.wake.notify_one();
            }
            Written::Failed => {
                out.failed = true;
                drop(out);
                self.wake.notify_one();
            }
        }
    }

    /// The task's write of a direct connection: everything queued, as far as the socket
    /// takes it. While it returns [`Written::Blocked`] the flusher leaves the connection to
    /// the task.
    pub(crate) fn write_queued(&self) -> Written {
        let mut out = self.out();
        if out.failed {
            return Written::Failed;
        }
        let written = write_out(&mut out);
        out.blocked = written == Written::Blocked;
        out.failed = written == Written::Failed;
        written
    }

    /// Resolves when the connection's task has something to look at ([`Self::attention`]).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// What the task must do now.
    pub(crate) fn attention(&self) -> Attention {
        let out = self.out();
        if out.failed {
            Attention::Failed
        } else if let Some(reason) = out.close {
            Attention::Close(reason)
        } else if out.blocked {
            Attention::Blocked
        } else if self.flusher.is_none() && !out.held && !out.queue.is_empty() {
            Attention::Frames
        } else {
            Attention::Nothing
        }
    }

    /// Takes up to `max` queued frames for a task-written connection to write.
    pub(crate) fn take_frames(&self, max: usize) -> Vec<Frame> {
        let mut out = self.out();
        let n = out.queue.len().min(max);
        let frames: Vec<Frame> = out.queue.drain(..n).map(|q| q.frame).collect();
        out.counted = out.queue.iter().filter(|q| q.counted).count();
        if !out.queue.is_empty() {
            drop(out);
            // More than one batch: come back for the rest after reading.
            self.wake.notify_one();
        }
        frames
    }

    /// Stops the flusher from writing this connection (its task is about to put a resume's
    /// replay in front of what arrives meanwhile); [`Self::release`] undoes it.
    pub(crate) fn hold(&self) {
        self.out().held = true;
    }

    /// Puts frames (in this connection's encoding, uncounted) in front of the queue: only
    /// between [`Self::hold`] and [`Self::release`], after the queue was written out, so no
    /// frame is half-written.
    pub(crate) fn push_front(&self, frames: Vec<Frame>) {
        let encoding = self.encoding;
        let mut out = self.out();
        for frame in frames.into_iter().rev() {
            out.queue
                .push_front(Queued::new(encoding.encode(&frame), false));
        }
    }

    /// Lets the flusher write this connection again.
    pub(crate) fn release(&self) {
        let mut out = self.out();
        out.held = false;
        if !out.queue.is_empty() {
            self.notify_writer(out);
        }
    }

    /// Drops every queued frame but a half-written one (a slow consumer gets only the close
    /// frame after what it has already begun to receive).
    pub(crate) fn discard_queued(&self) {
        self.out().set_aside_queue();
    }

    /// The user-scope messages set aside unwritten (see [`Out::mark_slow`]), taken.
    pub(crate) fn take_undelivered(&self) -> Vec<Arc<Publication>> {
        std::mem::take(&mut self.out().undelivered)
    }

    /// The connection ended: nothing more is queued, and the socket is released (it closes
    /// when the task drops its own handle). Returns the user-scope publications it never
    /// wrote, for the inbox.
    pub(crate) fn end(&self) -> Vec<Arc<Publication>> {
        let mut out = self.out();
        out.ended = true;
        out.stream = None;
        let queue = std::mem::take(&mut out.queue);
        // A frame begun but not finished is not delivered either.
        let mut undelivered = std::mem::take(&mut out.undelivered);
        undelivered.extend(queue.into_iter().filter_map(|q| q.keep));
        out.counted = 0;
        undelivered
    }

    /// Asks the connection to close; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        self.out().close.get_or_insert(reason);
        self.wake.notify_one();
    }

    /// Why the connection was asked to close, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.out().close
    }

    pub fn principal(&self) -> Principal {
        crate::sync::lock(&self.principal).clone()
    }

    pub(crate) fn set_principal(&self, principal: Principal) {
        *crate::sync::lock(&self.principal) = principal;
    }

    /// How many topics this connection is subscribed to.
    pub fn subscription_count(&self) -> usize {
        self.topics.lock().map_or(0, |t| t.len())
    }

    /// Whether this connection is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.topics.lock().is_ok_and(|t| t.contains(topic))
    }

    /// The topics this connection is subscribed to, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .topics
            .lock()
            .map(|t| t.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        topics.sort();
        topics
    }

    pub fn touch_heartbeat(&self) {
        self.last_heartbeat_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    pub fn last_heartbeat(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + std::time::Duration::from_millis(self.last_heartbeat_ms.load(Ordering::Relaxed))
    }

    /// A direct connection with no socket (the benchmarks' fan-out: pushes only).
    #[cfg(feature = "bench-internals")]
    pub(crate) fn unconnected(
        id: ConnId,
        principal: Principal,
        flusher: Arc<Flusher>,
    ) -> Arc<Self> {
        Self::build(
            id,
            principal,
            None,
            Encoding::Json,
            usize::MAX,
            Some(flusher),
        )
    }

    /// Back to an empty, unlisted queue (the benchmarks, between deliveries).
    #[cfg(feature = "bench-internals")]
    pub(crate) fn reset(&self) {
        let mut out = self.out();
        out.queue.clear();
        out.counted = 0;
        out.scheduled = false;
    }

    /// The queued frames, taken (unit tests of the hub).
    #[cfg(test)]
    pub(crate) fn take_all(&self) -> Vec<Frame> {
        let mut out = self.out();
        out.counted = 0;
        out.queue.drain(..).map(|q| q.frame).collect()
    }
}

/// Writes the queue from the front with as few `writev`s as the socket allows.
fn write_out(out: &mut Out) -> Written {
    let Some(stream) = out.stream.clone() else {
        return Written::Failed;
    };
    while !out.queue.is_empty() {
        let result = {
            let mut heads = [wire::Head::EMPTY; WRITE_BATCH];
            let mut payloads: [&[u8]; WRITE_BATCH] = [&[]; WRITE_BATCH];
            let mut frames = 0;
            for (i, queued) in out.queue.iter().take(WRITE_BATCH).enumerate() {
                (heads[i], payloads[i]) = wire::server_frame(&queued.frame);
                frames = i + 1;
            }
            let mut slices = [IoSlice::new(&[]); 2 * WRITE_BATCH];
            let mut used = 0;
            let mut skip = out.front_written;
            for (head, payload) in heads.iter().zip(payloads).take(frames) {
                for part in [head.as_slice(), payload] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    slices[used] = IoSlice::new(&part[skip..]);
                    used += 1;
                    skip = 0;
                }
            }
            stream.try_write_vectored(&slices[..used])
        };
        match result {
            Ok(0) => return Written::Failed,
            Ok(n) => {
                crate::metrics::sent(n);
                advance(out, n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Written::Blocked,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Written::Failed,
        }
    }
    Written::All
}

/// Drops from the queue what a write of `n` bytes completed.
fn advance(out: &mut Out, n: usize) {
    let mut done = out.front_written + n;
    while let Some(front) = out.queue.front() {
        let len = wire::wire_len(&front.frame);
        if done < len {
            break;
        }
        done -= len;
        if let Some(q) = out.queue.pop_front() {
            out.counted -= usize::from(q.counted);
        }
    }
    out.front_written = done;
    if out.queue.is_empty() {
        if let Some(since) = out.waiting_since.take() {
            crate::metrics::delivered_after(since.elapsed());
        }
    }
    if out.queue.is_empty() && out.queue.capacity() > 0 {
        // Idle connections hold no queue memory (a push allocates it again).
        out.queue = VecDeque::new();
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
