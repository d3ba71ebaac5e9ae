"""Wire contract: generated gRPC stubs (v1/) and conversions to domain types."""
