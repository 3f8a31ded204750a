"""Operations: metrics, logs, the audit trail and hot reload."""
