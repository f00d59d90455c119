"""What the connection routes do: $connect's handshake, $disconnect and ping."""
