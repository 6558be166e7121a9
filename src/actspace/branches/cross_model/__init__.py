"""cross_model"""
