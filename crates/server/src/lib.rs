//! The composition root of the chat service: configuration, telemetry, wiring, serving.

mod application;
mod choice;
pub mod settings;
mod strict_numbers;
pub mod telemetry;
mod text_list;
pub mod wiring;

pub use application::Application;
pub use settings::Settings;
