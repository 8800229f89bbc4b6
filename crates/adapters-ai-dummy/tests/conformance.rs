//! The shared Assistant contracts, in both modes.

use std::sync::Arc;
use std::time::Duration;

use adapters_ai_dummy::{DummyAssistant, DummyMode};

mod canned {
    use super::*;

    testkit::assistant_conformance!(async {
        Arc::new(DummyAssistant::new(
            DummyMode::Canned,
            Duration::from_millis(1),
        ))
    });
}

mod deterministic {
    use super::*;

    testkit::assistant_conformance!(async {
        Arc::new(DummyAssistant::new(
            DummyMode::Deterministic,
            Duration::ZERO,
        ))
    });
}
