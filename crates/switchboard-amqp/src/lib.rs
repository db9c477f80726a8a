//! placeholder
use switchboard_core::*;
/// placeholder
pub async fn connect(url: &str) -> Result<MemoryBroker> {
    Err(Error::unsupported("amqp", url.to_string()))
}
