//! Unit tests of MLLP framing, ACK parsing and the sender against an in-process peer on
//! 127.0.0.1 (the real peer, PyPI `hl7`, is in tests/hl7v2.rs).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const MESSAGE: &str = "MSH|^~\\&|PORTICO|CLINIC|MIRTH|EHR|20260114103105-0500||ADT^A08^ADT_A01|EVT-42|P|2.5.1\rEVN|A08\rPID|1\rPV1|1|N\r";

fn message() -> OutgoingMessage {
    OutgoingMessage::new(MESSAGE.to_owned()).unwrap()
}

fn ack(code: &str, control_id: &str) -> String {
    format!(
        "MSH|^~\\&|MIRTH|EHR|PORTICO|CLINIC|20260114103106||ACK^A08^ACK|A1|P|2.5.1\rMSA|{code}|{control_id}|told so\r"
    )
}

#[test]
fn a_frame_is_vt_message_fs_cr_and_unframes_back() {
    let block = frame("MSH|x\r");
    assert_eq!(block, b"\x0bMSH|x\r\x1c\x0d");
    let mut stream = b"\r\n".to_vec();
    stream.extend_from_slice(&block);
    stream.extend_from_slice(b"\x0bnext");
    let (content, used) = unframe(&stream).unwrap().unwrap();
    assert_eq!(content, b"MSH|x\r");
    assert_eq!(used, 2 + block.len());
    assert_eq!(unframe(&stream[used..]).unwrap(), None, "incomplete");
    assert_eq!(unframe(b"").unwrap(), None);
    assert!(unframe(b"HTTP/1.1 400").is_err());
    assert!(unframe(b"junk\x0bMSH\x1c\x0d").is_err());
}

#[test]
fn an_ack_is_read_from_msa_1_to_3() {
    let parsed = Ack::parse(&ack("AE", "EVT-42")).unwrap();
    assert_eq!(
        parsed,
        Ack {
            code: AckCode::ApplicationError,
            control_id: "EVT-42".into(),
            text: "told so".into()
        }
    );
    for code in ["AA", "AE", "AR", "CA", "CE", "CR"] {
        assert_eq!(Ack::parse(&ack(code, "1")).unwrap().code.as_str(), code);
    }
    for garbled in [
        String::new(),
        "hello".into(),
        "MSH|^~\\&|A\rPID|1\r".into(),
        ack("XX", "1"),
        ack("AA", ""),
    ] {
        assert!(Ack::parse(&garbled).is_err(), "{garbled:?}");
    }
}

#[test]
fn an_outgoing_message_needs_msh_10_and_no_framing_bytes() {
    assert_eq!(message().control_id(), "EVT-42");
    assert_eq!(
        OutgoingMessage::new("PID|1\r".into()),
        Err(InvalidMessage::NoHeader)
    );
    assert_eq!(
        OutgoingMessage::new("MSH|^~\\&|A|B|C|D|2026||ADT^A08\r".into()),
        Err(InvalidMessage::NoControlId)
    );
    assert_eq!(
        OutgoingMessage::new(MESSAGE.replace("PID|1", "PID|1\u{1c}")),
        Err(InvalidMessage::FramingBytes)
    );
}

/// A peer on 127.0.0.1 that answers each connection's messages with `answer(n)` (n counts
/// messages over all connections); `None` closes the connection without an answer.
async fn peer(
    answer: impl Fn(usize, &str) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (seen, received) = tokio::sync::mpsc::unbounded_channel();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (answer, seen, count) = (answer.clone(), seen.clone(), count.clone());
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(read) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    while let Some((content, used)) = unframe(&buffer).unwrap() {
                        let text = String::from_utf8(content.to_vec()).unwrap();
                        buffer.drain(..used);
                        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        seen.send(text.clone()).ok();
                        match answer(n, &text) {
                            Some(bytes) => socket.write_all(&bytes).await.unwrap(),
                            None => return,
                        }
                    }
                }
            });
        }
    });
    (address, received)
}

fn quick() -> MllpTimeouts {
    MllpTimeouts {
        connect: Duration::from_secs(2),
        ack: Duration::from_millis(300),
    }
}

#[tokio::test]
async fn each_ack_code_is_classified() {
    for (code, expected) in [
        ("AA", "accepted"),
        ("CA", "accepted"),
        ("AE", "error"),
        ("CE", "error"),
        ("AR", "rejected"),
        ("CR", "rejected"),
    ] {
        let (address, mut seen) = peer(move |_, _| Some(frame(&ack(code, "EVT-42")))).await;
        let mut sender = MllpSender::new(address, quick());
        let delivery = sender.deliver(&message()).await;
        let class = match &delivery {
            DeliveryOutcome::Accepted(ack)
            | DeliveryOutcome::Error(ack)
            | DeliveryOutcome::Rejected(ack) => {
                assert_eq!(ack.code.as_str(), code);
                assert_eq!(ack.text, "told so");
                match delivery {
                    DeliveryOutcome::Accepted(_) => "accepted",
                    DeliveryOutcome::Error(_) => "error",
                    _ => "rejected",
                }
            }
            DeliveryOutcome::Retry(cause) => panic!("{code}: retry {cause}"),
        };
        assert_eq!(class, expected, "{code}");
        assert_eq!(seen.recv().await.unwrap(), MESSAGE, "sent as it is");
    }
}

#[tokio::test]
async fn a_wrong_control_id_a_garbled_answer_and_silence_are_retries() {
    let (address, _) = peer(|_, _| Some(frame(&ack("AA", "EVT-41")))).await;
    let delivery = MllpSender::new(address, quick()).deliver(&message()).await;
    assert_eq!(
        delivery,
        DeliveryOutcome::Retry(RetryCause::WrongControlId {
            sent: "EVT-42".into(),
            received: "EVT-41".into()
        })
    );
    let (address, _) = peer(|_, _| Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())).await;
    let delivery = MllpSender::new(address, quick()).deliver(&message()).await;
    assert!(
        matches!(delivery, DeliveryOutcome::Retry(RetryCause::Garbled(_))),
        "{delivery:?}"
    );
    let (address, _) = peer(|_, _| Some(Vec::new())).await;
    let delivery = MllpSender::new(address, quick()).deliver(&message()).await;
    assert_eq!(
        delivery,
        DeliveryOutcome::Retry(RetryCause::AckTimeout(Duration::from_millis(300)))
    );
    let (address, _) = peer(|_, _| None).await;
    let delivery = MllpSender::new(address, quick()).deliver(&message()).await;
    assert_eq!(delivery, DeliveryOutcome::Retry(RetryCause::Closed));
}

#[tokio::test]
async fn a_refused_connection_is_a_retry() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let delivery = MllpSender::new(address, quick()).deliver(&message()).await;
    assert!(
        matches!(delivery, DeliveryOutcome::Retry(RetryCause::Connect(_))),
        "{delivery:?}"
    );
}

#[tokio::test]
async fn one_connection_carries_message_after_message_and_a_dropped_one_is_replaced() {
    // The peer answers the first two messages, closes the connection on the third (as an engine
    // closing an idle connection would), then answers again.
    let (address, mut seen) = peer(|n, text| {
        let id = OutgoingMessage::new(text.to_owned())
            .unwrap()
            .control_id()
            .to_owned();
        (n != 2).then(|| frame(&ack("AA", &id)))
    })
    .await;
    let mut sender = MllpSender::new(address, quick());
    for _ in 0..3 {
        assert!(matches!(
            sender.deliver(&message()).await,
            DeliveryOutcome::Accepted(_)
        ));
    }
    let mut received = Vec::new();
    while let Ok(text) = seen.try_recv() {
        received.push(text);
    }
    assert_eq!(
        received.len(),
        4,
        "the third message went twice, on a fresh connection"
    );
    assert!(received.iter().all(|text| text == MESSAGE));
}
