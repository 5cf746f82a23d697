"""Code that runs inside Kamailio: the KEMI adapter and the pure decision core."""
