"""containerd.services.events.ttrpc.v1: Events/Forward, ForwardRequest and Envelope."""
