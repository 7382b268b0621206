"""mixqvit"""
