"""premortems"""
