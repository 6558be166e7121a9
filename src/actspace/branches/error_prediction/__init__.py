"""error_prediction"""
