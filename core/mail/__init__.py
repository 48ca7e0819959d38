"""Mail to buyers through an outbox: outbox.py writes a message in the transaction of the
change it tells of; sender.py sends what is pending over SMTP and marks it sent."""
