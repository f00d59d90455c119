"""Who may connect: tokens and the secrets that check them."""
