"""Domain of the flash-sale pipeline: inventory in Redis, orders in SQL, settlement, payments."""
