//! Azure OpenAI (classic deployment API): the OpenAI wire format with the
//! deployment in the URL, a required `api-version` query and an `api-key`
//! header. Responses are OpenAI-shaped, plus content-filter annotations that
//! the relay skips when they carry no answer. For Azure's newer `/openai/v1`
//! API, configure `kind: openai` with `auth_header: api-key`.

use super::openai::{Flavor, OpenAiProvider};
use crate::config::HttpSpec;

pub fn new(name: &str, http: HttpSpec, api_version: &str) -> OpenAiProvider {
    OpenAiProvider::new(
        name,
        http,
        Flavor::Azure {
            api_version: api_version.to_owned(),
        },
    )
}
