//! MLLP delivery of HL7 v2 messages to one peer: framing (0x0B message 0x1C 0x0D), one connection
//! kept open, one message in flight, the ACK awaited with a timeout and classified (MSA-1 and
//! MSA-2) into what the outbox does next: done, give up, or send the same message again later.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const START_BLOCK: u8 = 0x0B;
const END_BLOCK: u8 = 0x1C;
const CARRIAGE_RETURN: u8 = 0x0D;

/// An ACK larger than this is not an ACK: the connection is dropped rather than buffered on.
const MAX_ACK_BYTES: usize = 64 * 1024;

/// Wraps a message in an MLLP block.
pub fn frame(message: &str) -> Vec<u8> {
    let mut block = Vec::with_capacity(message.len() + 3);
    block.push(START_BLOCK);
    block.extend_from_slice(message.as_bytes());
    block.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
    block
}

/// The first complete block in `buffer`: `Ok(Some((content, bytes consumed)))`, `Ok(None)` when
/// more bytes are needed, `Err` when the bytes cannot be MLLP (anything but line breaks before the
/// start byte).
pub fn unframe(buffer: &[u8]) -> Result<Option<(&[u8], usize)>, Garbled> {
    let Some(start) = buffer.iter().position(|&b| b == START_BLOCK) else {
        return if buffer.iter().all(|b| b"\r\n".contains(b)) {
            Ok(None)
        } else {
            Err(Garbled("bytes outside an MLLP block".into()))
        };
    };
    if !buffer[..start].iter().all(|b| b"\r\n".contains(b)) {
        return Err(Garbled("bytes outside an MLLP block".into()));
    }
    let content = &buffer[start + 1..];
    match content
        .windows(2)
        .position(|pair| pair == [END_BLOCK, CARRIAGE_RETURN])
    {
        Some(end) => Ok(Some((&content[..end], start + 1 + end + 2))),
        None => Ok(None),
    }
}

/// Why an answer is not a usable ACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("garbled acknowledgement: {0}")]
pub struct Garbled(pub String);

/// MSA-1 (HL7 table 0008): original mode (A*) and enhanced mode commit acknowledgements (C*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    ApplicationAccept,
    ApplicationError,
    ApplicationReject,
    CommitAccept,
    CommitError,
    CommitReject,
}

impl AckCode {
    pub fn parse(code: &str) -> Option<AckCode> {
        Some(match code {
            "AA" => AckCode::ApplicationAccept,
            "AE" => AckCode::ApplicationError,
            "AR" => AckCode::ApplicationReject,
            "CA" => AckCode::CommitAccept,
            "CE" => AckCode::CommitError,
            "CR" => AckCode::CommitReject,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::ApplicationAccept => "AA",
            AckCode::ApplicationError => "AE",
            AckCode::ApplicationReject => "AR",
            AckCode::CommitAccept => "CA",
            AckCode::CommitError => "CE",
            AckCode::CommitReject => "CR",
        }
    }
}

/// A parsed ACK: MSA-1, MSA-2 and MSA-3 (the peer's text, for the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub code: AckCode,
    pub control_id: String,
    pub text: String,
}

impl Ack {
    /// Reads an ACK message: an MSH first (whose fourth byte is the field separator), then an MSA
    /// with a known code and a control id.
    pub fn parse(message: &str) -> Result<Ack, Garbled> {
        let mut segments = message.split(['\r', '\n']).filter(|s| !s.is_empty());
        let msh = segments.next().unwrap_or("");
        let separator = match msh.strip_prefix("MSH").and_then(|rest| rest.chars().next()) {
            Some(separator) if !separator.is_alphanumeric() => separator,
            _ => return Err(Garbled("no MSH segment".into())),
        };
        let msa = segments
            .find(|segment| segment.starts_with(&format!("MSA{separator}")))
            .ok_or_else(|| Garbled("no MSA segment".into()))?;
        let fields: Vec<&str> = msa.split(separator).collect();
        let field = |n: usize| fields.get(n).copied().unwrap_or("");
        let code = AckCode::parse(field(1))
            .ok_or_else(|| Garbled(format!("unknown MSA-1 {:?}", field(1))))?;
        if field(2).is_empty() {
            return Err(Garbled("no MSA-2".into()));
        }
        Ok(Ack {
            code,
            control_id: field(2).to_owned(),
            text: field(3).to_owned(),
        })
    }
}

/// A message ready to be sent: its MSH-10 read once, and nothing in it that could end its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    text: String,
    control_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    #[error("not an HL7 message: it does not start with an MSH segment")]
    NoHeader,
    #[error("the message has no control id (MSH-10)")]
    NoControlId,
    #[error("the message contains MLLP framing bytes (0x0B or 0x1C)")]
    FramingBytes,
}

impl OutgoingMessage {
    pub fn new(text: String) -> Result<OutgoingMessage, InvalidMessage> {
        if text.bytes().any(|b| b == START_BLOCK || b == END_BLOCK) {
            return Err(InvalidMessage::FramingBytes);
        }
        let msh = text.split('\r').next().unwrap_or("");
        let separator = msh
            .strip_prefix("MSH")
            .and_then(|rest| rest.chars().next())
            .ok_or(InvalidMessage::NoHeader)?;
        // MSH-1 is the separator itself, so MSH-n is the n-1th piece after splitting.
        let control_id = msh.split(separator).nth(9).unwrap_or("");
        if control_id.is_empty() {
            return Err(InvalidMessage::NoControlId);
        }
        let control_id = control_id.to_owned();
        Ok(OutgoingMessage { text, control_id })
    }

    pub fn control_id(&self) -> &str {
        &self.control_id
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// What the outbox does with a message after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// AA or CA with our MSH-10: delivered.
    Accepted(Ack),
    /// AR or CR: the peer refuses this message; resending it as it is would be refused again.
    Rejected(Ack),
    /// AE or CE: the peer's application failed on it; the operator decides.
    Error(Ack),
    /// No usable answer: send the same message again later.
    Retry(RetryCause),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryCause {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("no acknowledgement within {0:?}")]
    AckTimeout(Duration),
    #[error("the connection failed: {0}")]
    Connection(String),
    #[error("the peer closed the connection before acknowledging")]
    Closed,
    #[error(transparent)]
    Garbled(#[from] Garbled),
    #[error("the acknowledgement is for control id {received:?}, not {sent:?}")]
    WrongControlId { sent: String, received: String },
}

/// Timeouts of one peer (security-reliability §1.2: connect 5 s, response 15 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MllpTimeouts {
    pub connect: Duration,
    pub ack: Duration,
}

impl Default for MllpTimeouts {
    fn default() -> Self {
        MllpTimeouts {
            connect: Duration::from_secs(5),
            ack: Duration::from_secs(15),
        }
    }
}

/// The sender for one peer. `deliver` takes `&mut self`: one message in flight on the one connection.
/// After any failure the connection is dropped (a late ACK on it could be taken for the next
/// message's) and the next `deliver` connects again.
#[derive(Debug)]
pub struct MllpSender {
    peer: String,
    timeouts: MllpTimeouts,
    connection: Option<TcpStream>,
}

impl MllpSender {
    /// `peer` is `host:port`; nothing is connected until the first send.
    pub fn new(peer: impl Into<String>, timeouts: MllpTimeouts) -> MllpSender {
        MllpSender {
            peer: peer.into(),
            timeouts,
            connection: None,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Sends the message as it is (its MSH-10 unchanged, so a resend is recognisably the same
    /// message) and classifies the answer.
    pub async fn deliver(&mut self, message: &OutgoingMessage) -> DeliveryOutcome {
        let reused = self.connection.is_some();
        match self.attempt(message).await {
            // A kept connection the peer closed while idle (engines time idle ones out) fails
            // before any answer: that says nothing about this message, so one fresh connection is
            // tried at once.
            Err(RetryCause::Closed | RetryCause::Connection(_)) if reused => {
                match self.attempt(message).await {
                    Ok(delivery) => delivery,
                    Err(cause) => DeliveryOutcome::Retry(cause),
                }
            }
            Ok(delivery) => delivery,
            Err(cause) => DeliveryOutcome::Retry(cause),
        }
    }

    async fn attempt(&mut self, message: &OutgoingMessage) -> Result<DeliveryOutcome, RetryCause> {
        let result = self.exchange(message).await;
        if result.is_err() {
            self.connection = None;
        }
        let ack = result?;
        Ok(match ack.code {
            AckCode::ApplicationAccept | AckCode::CommitAccept => DeliveryOutcome::Accepted(ack),
            AckCode::ApplicationReject | AckCode::CommitReject => DeliveryOutcome::Rejected(ack),
            AckCode::ApplicationError | AckCode::CommitError => DeliveryOutcome::Error(ack),
        })
    }

    async fn exchange(&mut self, message: &OutgoingMessage) -> Result<Ack, RetryCause> {
        if self.connection.is_none() {
            let connect = TcpStream::connect(self.peer.as_str());
            let stream = timeout(self.timeouts.connect, connect)
                .await
                .map_err(|_| RetryCause::ConnectTimeout(self.timeouts.connect))?
                .map_err(|e| RetryCause::Connect(e.to_string()))?;
            stream.set_nodelay(true).ok();
            self.connection = Some(stream);
        }
        let stream = self.connection.as_mut().expect("connected above");
        let wait = self.timeouts.ack;
        let answer = timeout(wait, async {
            stream
                .write_all(&frame(message.text()))
                .await
                .map_err(|e| RetryCause::Connection(e.to_string()))?;
            read_block(stream).await
        })
        .await
        .map_err(|_| RetryCause::AckTimeout(wait))??;
        let text = String::from_utf8(answer)
            .map_err(|_| Garbled("the acknowledgement is not UTF-8".into()))?;
        let ack = Ack::parse(&text)?;
        if ack.control_id != message.control_id() {
            return Err(RetryCause::WrongControlId {
                sent: message.control_id().to_owned(),
                received: ack.control_id,
            });
        }
        Ok(ack)
    }
}

/// Reads one MLLP block (its content) from the stream.
async fn read_block(stream: &mut TcpStream) -> Result<Vec<u8>, RetryCause> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((content, _)) = unframe(&buffer)? {
            return Ok(content.to_vec());
        }
        if buffer.len() > MAX_ACK_BYTES {
            return Err(Garbled("an acknowledgement over 64 KiB".into()).into());
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| RetryCause::Connection(e.to_string()))?;
        if read == 0 {
            return Err(RetryCause::Closed);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

#[cfg(test)]
mod tests;
