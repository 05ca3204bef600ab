//! Feeds arbitrary bytes to request validation: as encoded create, delete and list requests, and
//! as label selectors and durations. Validation must return a result for every input, never
//! panic.

#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sandgate_core::labels::Selector;
use sandgate_proto::v1 as pb;
use sandgate_server::convert;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = pb::CreateSandboxRequest::decode(data) {
        if let Ok(record) = convert::new_record(&request, SystemTime::now()) {
            // A record that passed validation converts back without loss of identity.
            let sandbox = convert::sandbox(&record);
            assert_eq!(sandbox.name, request.name);
        }
    }
    if let Ok(request) = pb::DeleteSandboxRequest::decode(data) {
        let _ = convert::target("target", request.target.as_ref());
        let _ = convert::duration_field("timeout", request.timeout.as_ref());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Selector::parse("label_selector", text);
        let _ = sandgate_core::duration::parse(text);
    }
});
