//! The hot path, piece by piece (docs/BENCHMARKS.md): encoding one publication, fanning it
//! out to 10,000 connection queues, and the writer draining a full queue into a real loopback
//! socket. Run with `cargo bench -p herald --features bench-internals`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use herald::bench_support::{publication, FanOut, Writer};

fn encode(c: &mut Criterion) {
    let publication = publication();
    c.bench_function("encode one publication", |b| {
        b.iter(|| std::hint::black_box(publication.frame()))
    });
}

fn fan_out(c: &mut Criterion) {
    let publication = publication();
    let fan_out = FanOut::new(10_000);
    let mut group = c.benchmark_group("fan out");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("to 10,000 queues", |b| {
        b.iter_batched(
            || fan_out.reset(),
            |()| assert_eq!(fan_out.deliver(&publication), 10_000),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn drain(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("no runtime: {e}"),
    };
    let writer = match runtime.block_on(Writer::new()) {
        Ok(writer) => writer,
        Err(e) => panic!("no loopback socket: {e}"),
    };
    let publication = publication();
    let mut group = c.benchmark_group("writer");
    group.throughput(Throughput::Elements(256));
    group.bench_function("drains a full queue (256 frames)", |b| {
        b.iter_batched(
            || writer.fill(&publication, 256),
            |()| assert!(runtime.block_on(writer.drain())),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, encode, fan_out, drain);
criterion_main!(benches);
