//! The NATS JetStream test rig (`apiary_tests::nats`): a 3-node cluster on loopback keeps a
//! replicated stream across a SIGKILL of the stream's leader, deduplicates by message id, and
//! honours `Nats-Expected-Last-Subject-Sequence: 0` ("no message on this subject yet").
//! Runs when `APIARY_CLUSTER_TESTS=1` (as `.ci/run` sets, with Debian's `nats-server`).

use std::time::Duration;

use apiary_tests::nats::{cluster_tests_enabled, NatsCluster};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config, StorageType};
use async_nats::jetstream::{self, publish::PublishAck};
use serde_json::Value;
use tokio::time::Instant;

/// Publishes `payload` with message id `id` to `subject`, retrying (publishing pauses while a
/// stream elects a leader) until acked or `deadline`.
async fn publish_until_acked(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    deadline: Instant,
) -> PublishAck {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let publish = PublishMessage::build()
            .payload(format!("message {id}").into())
            .message_id(id);
        let err = match js.send_publish(subject.to_owned(), publish).await {
            Ok(ack) => match ack.await {
                Ok(ack) => return ack,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "publish {id} to {subject} not acked before the deadline ({attempts} attempts, last: {err})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stream's message count from stream info (retried while the cluster settles).
async fn stream_messages(js: &jetstream::Context, stream: &str, deadline: Instant) -> u64 {
    loop {
        let err = match js.get_stream(stream).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => return info.state.messages,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "no stream info for {stream} before the deadline (last: {err})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `Nats-Expected-Last-Subject-Sequence: 0` on a fresh subject is accepted (even though the
/// stream already holds a message on another subject), and refused once the subject has one.
async fn check_expected_last_subject_sequence_zero(js: &jetstream::Context) {
    js.create_stream(Config {
        name: "CAS".into(),
        subjects: vec!["cas.>".into()],
        num_replicas: 3,
        storage: StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream CAS (R3, file)");
    let other = js
        .publish("cas.other", "x".into())
        .await
        .expect("publish cas.other")
        .await
        .expect("ack of cas.other");
    assert_eq!(other.sequence, 1);

    let first = js
        .send_publish(
            "cas.fresh",
            PublishMessage::build()
                .payload("first".into())
                .expected_last_subject_sequence(0),
        )
        .await
        .expect("send the first expected-0 publish")
        .await;
    let first = first.unwrap_or_else(|e| {
        panic!("expected_last_subject_sequence(0) on a fresh subject was refused: {e}")
    });
    assert_eq!(first.sequence, 2, "first expected-0 publish: {first:?}");
    eprintln!(
        "expected_last_subject_sequence(0) on a fresh subject: acked as seq {}",
        first.sequence
    );

    let second = js
        .send_publish(
            "cas.fresh",
            PublishMessage::build()
                .payload("second".into())
                .expected_last_subject_sequence(0),
        )
        .await
        .expect("send the second expected-0 publish")
        .await;
    match second {
        Ok(ack) => panic!(
            "expected_last_subject_sequence(0) on a subject that has a message was accepted: {ack:?}"
        ),
        Err(e) => {
            eprintln!("expected_last_subject_sequence(0) again on the same subject: refused ({e})");
            assert_eq!(e.kind(), PublishErrorKind::WrongLastSequence, "{e}");
        }
    }
}

/// The stream's message count as node `i`'s monitoring endpoint reports it.
async fn node_stream_messages(cluster: &NatsCluster, i: usize, stream: &str) -> Option<u64> {
    let url = format!("{}/jsz?acc=%24G&streams=true", cluster.monitor_url(i));
    let jsz: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
    jsz["account_details"]
        .as_array()?
        .iter()
        .filter(|a| a["name"] == "$G")
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
        .find(|s| s["name"] == stream)?["state"]["messages"]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_keeps_a_replicated_stream_across_a_leader_kill() {
    if !cluster_tests_enabled() {
        eprintln!(
            "NATS cluster test skipped: set APIARY_CLUSTER_TESTS=1 (as .ci/run does) with \
             Debian's nats-server installed"
        );
        return;
    }
    let began = Instant::now();
    let mut cluster = NatsCluster::start(3).await;
    eprintln!("3-node cluster ready in {:?}", began.elapsed());

    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(cluster.urls())
        .await
        .expect("connect to the NATS cluster");
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(2));

    check_expected_last_subject_sequence_zero(&js).await;

    js.create_stream(Config {
        name: "RIG".into(),
        subjects: vec!["rig.>".into()],
        num_replicas: 3,
        storage: StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream RIG (R3, file)");

    let deadline = Instant::now() + Duration::from_secs(10);
    for k in 1..=100 {
        let ack = publish_until_acked(&js, "rig.msg", &format!("rig-{k}"), deadline).await;
        assert!(!ack.duplicate, "message {k} taken for a duplicate: {ack:?}");
    }
    let leader = cluster
        .wait_stream_leader("RIG", Duration::from_secs(10))
        .await;
    eprintln!("RIG leader is {}; SIGKILL", cluster.name(leader));
    cluster.kill9(leader).await;
    assert!(!cluster.is_running(leader));
    let killed = Instant::now();

    let deadline = killed + Duration::from_secs(30);
    let mut resumed = None;
    for k in 101..=200 {
        publish_until_acked(&js, "rig.msg", &format!("rig-{k}"), deadline).await;
        resumed.get_or_insert_with(|| killed.elapsed());
    }
    let new_leader = cluster
        .wait_stream_leader("RIG", Duration::from_secs(10))
        .await;
    assert_ne!(new_leader, leader, "the killed node still leads RIG");
    eprintln!(
        "publishing resumed {:?} after the kill; 100 more acked after {:?}; new leader {}",
        resumed.unwrap_or_default(),
        killed.elapsed(),
        cluster.name(new_leader)
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(stream_messages(&js, "RIG", deadline).await, 200);
    let dup = publish_until_acked(&js, "rig.msg", "rig-150", deadline).await;
    assert!(
        dup.duplicate,
        "republishing message id rig-150 was not deduplicated: {dup:?}"
    );
    assert_eq!(stream_messages(&js, "RIG", deadline).await, 200);

    cluster.restart(leader).await;
    assert!(cluster.is_running(leader));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = node_stream_messages(&cluster, leader, "RIG").await;
        if n == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted {} reports {n:?} messages in RIG, not 200\n{}",
            cluster.name(leader),
            cluster.log_tail(leader, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} restarted, healthy, caught up; test took {:?}",
        cluster.name(leader),
        began.elapsed()
    );
}
