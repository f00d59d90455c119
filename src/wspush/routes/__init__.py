"""What the connection routes do: $connect's handshake, $disconnect and ping, hello and
recover, and the round trip every client request shares."""
