pub mod runbook {
    pub mod node;
}
