"""The streaming triage service: Kafka in, micro-batched inference, routing, Kafka out."""
