//! `publish`: how many `POST /api/v1/publish` requests a second the server answers over
//! HTTP/1.1 keep-alive, each to a topic with one subscriber that counts what arrives. The
//! requests are written and their answers parsed by hand (one request in flight per
//! connection, many connections), so the tool's own cost per request stays a few µs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Failure;

/// What one run measured.
pub struct Outcome {
    pub answered: u64,
    pub failed: u64,
    pub delivered: u64,
    pub took: Duration,
    /// Answer latency percentiles, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `conns` keep-alive connections publish for `secs`: as fast as the server answers, or at
/// `rate` publishes a second in all when given; connection i sends `bodies[i % bodies.len()]`.
pub async fn run(
    addr: &str,
    api_key: &str,
    bodies: &[String],
    conns: usize,
    secs: u64,
    rate: Option<u64>,
    mut subscriber: crate::Conn,
) -> Result<Outcome, Failure> {
    let requests: Vec<Arc<[u8]>> = bodies
        .iter()
        .map(|body| {
            format!(
                "POST /api/v1/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {api_key}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
            .into()
        })
        .collect();
    let delivered = Arc::new(AtomicU64::new(0));
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (delivered, reading) = (delivered.clone(), reading.clone());
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while reading.load(Ordering::Relaxed) {
                batch.clear();
                if subscriber.recv_sent_us(&mut batch).await.is_err() {
                    break;
                }
                delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut publishers = Vec::new();
    let conns = conns.max(1);
    // At a fixed rate each connection sends every `conns / rate` seconds, the connections'
    // schedules spread evenly over one interval.
    let interval = rate.map(|r| Duration::from_secs_f64(conns as f64 / r.max(1) as f64));
    for i in 0..conns {
        let (addr, request) = (addr.to_string(), requests[i % requests.len()].clone());
        let pace = interval.map(|every| Pace {
            next: started + every.mul_f64(i as f64 / conns as f64),
            every,
        });
        publishers.push(tokio::spawn(async move {
            publisher(&addr, &request, deadline, pace).await
        }));
    }
    let (mut answered, mut failed) = (0, 0);
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    for publisher in publishers {
        let (ok, bad, each) = publisher.await??;
        answered += ok;
        failed += bad;
        latencies.add(each)?;
    }
    let took = started.elapsed();
    // What was published is delivered within moments; then the count is final.
    let settle = Instant::now() + Duration::from_secs(3);
    while delivered.load(Ordering::Relaxed) < answered && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reading.store(false, Ordering::Relaxed);
    reader.abort();
    Ok(Outcome {
        answered,
        failed,
        delivered: delivered.load(Ordering::Relaxed),
        took,
        p50_ms: latencies.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// A connection's schedule at a fixed rate: when its next request is due.
struct Pace {
    next: Instant,
    every: Duration,
}

/// One connection publishing until `deadline`: (2xx answers, other answers, answer latencies
/// in µs). Paced, a request that is late because an earlier answer was slow counts its
/// latency from when it was due, so slow answers are not hidden (coordinated omission).
async fn publisher(
    addr: &str,
    request: &[u8],
    deadline: Instant,
    mut pace: Option<Pace>,
) -> Result<(u64, u64, hdrhistogram::Histogram<u64>), Failure> {
    let mut tcp = crate::raw::tcp_to(addr, None).await?;
    let mut buf = vec![0u8; 8192];
    let (mut ok, mut bad) = (0, 0);
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    while Instant::now() < deadline {
        let sent = match pace.as_mut() {
            Some(pace) => {
                let due = pace.next;
                pace.next += pace.every;
                if due >= deadline {
                    break;
                }
                if due > Instant::now() {
                    // On time: the timer's millisecond grain is the tool's, not the server's.
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    // Behind because an answer was slow: that wait counts.
                    due
                }
            }
            None => Instant::now(),
        };
        tcp.write_all(request).await?;
        let mut have = 0;
        loop {
            if have == buf.len() {
                return Err("answer too long".into());
            }
            let n = tcp.read(&mut buf[have..]).await?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            have += n;
            if let Some((status, total)) = answer(&buf[..have]) {
                if (200..300).contains(&status) {
                    ok += 1;
                    latencies.record(sent.elapsed().as_micros() as u64)?;
                } else {
                    bad += 1;
                }
                if total != have {
                    return Err("more than one answer to one request".into());
                }
                break;
            }
        }
    }
    Ok((ok, bad, latencies))
}

/// The status and total length of the complete HTTP answer at the start of `bytes`, if it is
/// all there.
fn answer(bytes: &[u8]) -> Option<(u16, usize)> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let status = head.get(9..12)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (bytes.len() >= head_end + length).then_some((status, head_end + length))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answer_is_complete_only_with_its_whole_body() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(super::answer(full), Some((200, full.len())));
        assert_eq!(super::answer(&full[..full.len() - 1]), None);
        assert_eq!(super::answer(b"HTTP/1.1 401 Unauthorized\r\n"), None);
    }
}
