"""Client-side checks run inside the guest against a live mount (`check`)."""
