//! GitHub webhooks (placeholder).
