//! JWT (HS256) verification (`switchboard_core::auth::JwtKeys`): every WebSocket upgrade and
//! every authenticated HTTP call verifies one access token, so this bounds the connection
//! setup rate per core. The failure path (a token signed with another secret) is what a flood
//! of forged tokens costs. `issue` (two signatures, at login and refresh) is measured too.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use switchboard_core::auth::{AuthError, JwtKeys, TokenKind};
use switchboard_core::ids::{DeviceId, UserId};

fn keys(secret: u8) -> JwtKeys {
    JwtKeys::new(&[secret; 32], Duration::from_secs(900), Duration::from_secs(30 * 86_400))
}

fn bench_auth(c: &mut Criterion) {
    let k = keys(7);
    let device = DeviceId("5f0c9a2e7b1d4c3f8a6e2d1b0c9f8e7d".into());
    let token = k.issue(UserId(101), &device).access;
    let forged = keys(8).issue(UserId(101), &device).access;
    assert_eq!(k.verify(&token, TokenKind::Access).expect("valid token").sub, 101);
    assert!(matches!(k.verify(&forged, TokenKind::Access), Err(AuthError::Invalid)));

    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_access_ok", |b| b.iter(|| k.verify(black_box(&token), TokenKind::Access).expect("valid token")));
    g.bench_function("verify_bad_signature", |b| {
        b.iter(|| k.verify(black_box(&forged), TokenKind::Access).expect_err("forged token"))
    });
    g.bench_function("issue_pair", |b| b.iter(|| k.issue(black_box(UserId(101)), &device)));
    g.finish();
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
