//! InitProducerId: a producer id and epoch for an idempotent producer.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use super::{RequestContext, Versions};
use crate::broker::Broker;

/// All versions; transactional ids are refused.
pub(super) const INIT_PRODUCER_ID: Versions = (ApiKey::InitProducerId, 0, 4);

impl Broker {
    pub(super) async fn init_producer_id(
        &self,
        request: InitProducerIdRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<InitProducerIdResponse> {
        let mut response = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if request
            .transactional_id
            .as_ref()
            .is_some_and(|id| !id.is_empty())
        {
            // Transactions are not implemented; refuse rather than pretend.
            response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            return Some(response);
        }
        // KIP-360: an idempotent producer may bump its own epoch.
        if request.producer_id.0 >= 0
            && request.producer_epoch >= 0
            && request.producer_epoch < i16::MAX - 1
        {
            response.producer_id = request.producer_id;
            response.producer_epoch = request.producer_epoch + 1;
            return Some(response);
        }
        match self.allocate_producer_id().await {
            Ok(id) => {
                response.producer_id = ProducerId(id);
                response.producer_epoch = 0;
            }
            Err(error) => {
                tracing::error!(%error, "persisting the producer id block failed");
                response.error_code = ResponseError::CoordinatorNotAvailable.code();
            }
        }
        Some(response)
    }
}
